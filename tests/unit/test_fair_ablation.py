"""The parts of the fair ablation: the label-scarce scale, the feature
cache, the perturbation strength and the gradient-norm diagnostic."""

import json

import pytest
import torch

from speechbrain_sed_condmix.augment.mixup import ConditionalMixup
from speechbrain_sed_condmix.dataio.synth import SCALES
from speechbrain_sed_condmix.lobes.feature_cache import FeatureCache
from speechbrain_sed_condmix.lobes.features import (
    ATSTMelFrontEnd,
    CNNMelFrontEnd,
    DualMelFrontEnd,
)
from speechbrain_sed_condmix.objectives import (
    MeanTeacherConsistency,
    SEDObjective,
    SupervisedBCE,
)

# ---------------------------------------------------------------------------
# The label-scarce protocol


def test_ssl_scale_is_label_scarce_with_a_reporting_split():
    ssl = SCALES["ssl"]
    # Few labelled clips, many unlabeled ones.
    assert ssl["synth_train"] == 100 and ssl["weak"] <= 60
    assert ssl["unlabeled"] >= 1000
    assert ssl["unlabeled"] >= 5 * (ssl["synth_train"] + ssl["weak"])
    # A selection split, and a larger reporting split.
    assert ssl["synth_val"] >= 100 and ssl["validation"] >= 300


def test_sed_mini_desed_accepts_the_ssl_scale(tmp_path, monkeypatch):
    from speechbrain_sed_condmix import cli

    # The real ssl scale takes a minute: the same code path at 4 clips.
    monkeypatch.setitem(SCALES, "ssl", dict.fromkeys(SCALES["ssl"], 4))
    out = tmp_path / "mini"
    assert cli.mini_desed_main(["--out", str(out), "--scale", "ssl"]) == 0
    marker = json.loads((out / "mini_desed.json").read_text())
    assert marker["scale"] == "ssl" and marker["complete"]


@pytest.mark.slow
def test_ssl_generation_and_preparation_counts(tmp_path, monkeypatch):
    """The ssl scale's clip counts through generation and preparation.

    The counts come from the generator's plan, not from the sound of a
    clip, so each clip's audio is replaced by quiet noise of the same
    length: synthesising 1,700 clips took about 3 minutes of the suite,
    and rendering is tested on its own (test_synth.py).
    """
    import numpy as np

    from speechbrain_sed_condmix.dataio.desed import prepare_desed
    from speechbrain_sed_condmix.dataio.synth import (
        generate_mini_desed,
        mini_desed,
    )

    def quiet_clip(rng, length_ms, events, ebr_range, sr):
        n = length_ms * sr // 1000
        return (1e-3 * rng.standard_normal(n)).astype(np.float32)

    monkeypatch.setattr(mini_desed, "render_clip", quiet_clip)
    data = generate_mini_desed(tmp_path / "data", scale="ssl")
    paths = prepare_desed(data, tmp_path / "prep", progress=False)
    counts = {
        name: len(json.loads(path.read_text()))
        for name, path in paths.items()
        if str(path).endswith(".json")
    }
    ssl = SCALES["ssl"]
    for name in ("synth_train", "unlabeled", "synth_val", "validation"):
        assert counts[name] == ssl[name]
    assert counts["weak_train"] + counts["weak_val"] == ssl["weak"]
    assert counts["weak_train"] == round(0.9 * ssl["weak"])


# ---------------------------------------------------------------------------
# The feature cache


def clips(n=3, samples=16000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # Loud and quiet clips, and a padded tail of zeros.
    wavs = torch.randn(n, samples, generator=gen)
    wavs *= torch.logspace(-3, 0, n).unsqueeze(1)
    wavs[0, samples // 2 :] = 0
    return wavs


def test_cached_mel_equals_the_live_front_end_to_1e3(tmp_path):
    frontend = CNNMelFrontEnd()
    cache = FeatureCache(tmp_path)
    wavs = clips()
    live = frontend.mel(wavs)
    first = cache.mel(wavs, frontend)
    second = cache.mel(wavs, frontend)
    assert (cache.misses, cache.hits) == (3, 3)
    # What a run sees does not depend on whether the cache was warm.
    assert torch.equal(first, second)
    assert torch.allclose(second, live, rtol=1e-3, atol=1e-7)
    # ... and the network input (log, clamp, per-clip scaling) too.
    assert torch.allclose(
        frontend.normalize(second), frontend.normalize(live), atol=1e-3
    )


def test_cache_reads_stored_clips_without_the_front_end(tmp_path):
    frontend = CNNMelFrontEnd()
    wavs = clips()
    FeatureCache(tmp_path).mel(wavs, frontend)
    calls = []
    original = frontend.mel

    def counting_mel(x):
        calls.append(len(x))
        return original(x)

    frontend.mel = counting_mel
    cache = FeatureCache(tmp_path)  # a new run on the same folder
    mixed = torch.cat([wavs[:2], clips(1, seed=5)])
    out = cache.mel(mixed, frontend)
    # The front-end probe (1 clip) and the one new clip only.
    assert calls == [1, 1] and (cache.hits, cache.misses) == (2, 1)
    assert torch.allclose(out, original(mixed), rtol=1e-3, atol=1e-7)


def test_cache_keys_by_content_and_by_front_end(tmp_path):
    wavs = clips(2)
    cache = FeatureCache(tmp_path)
    cache.mel(wavs, CNNMelFrontEnd())
    shifted = torch.roll(wavs, 100, dims=1)  # e.g. another random crop
    cache.mel(shifted, CNNMelFrontEnd())
    assert cache.misses == 4
    other = CNNMelFrontEnd(n_mels=64)
    out = cache.mel(wavs, other)
    assert out.shape[1] == 64 and cache.misses == 6
    assert len(list(tmp_path.iterdir())) == 2  # one folder per front end


def test_cache_handles_two_mels_and_float16_range(tmp_path):
    frontend = DualMelFrontEnd(CNNMelFrontEnd(), ATSTMelFrontEnd())
    wavs = clips(2) * 1000  # far beyond full scale: power mel up to ~1e13
    cache = FeatureCache(tmp_path)
    cache.mel(wavs, frontend)
    cnn, atst = cache.mel(wavs, frontend)
    live_cnn, live_atst = frontend.mel(wavs)
    assert torch.isfinite(atst).all() and atst.max() > 1e10
    assert torch.allclose(cnn, live_cnn, rtol=1e-3, atol=1e-7)
    # Relative to each clip's peak: the ATST dB step keeps 80 dB of it.
    peak = live_atst.amax(dim=(1, 2), keepdim=True)
    assert ((atst - live_atst).abs() <= 1e-3 * live_atst + 1e-8 * peak).all()


def test_disabled_cache_is_the_front_end(tmp_path):
    frontend = CNNMelFrontEnd()
    wavs = clips(2)
    cache = FeatureCache(None)
    assert not cache.enabled
    assert torch.equal(cache.mel(wavs, frontend), frontend.mel(wavs))


def test_brain_with_the_cache_gives_the_same_predictions(tmp_path):
    import speechbrain as sb
    from test_brain import make_batch, make_brain

    batch = make_batch(["strong", "weak", "unlabeled", "unlabeled"])
    outputs = []
    for cache in (FeatureCache(None), FeatureCache(tmp_path)):
        brain = make_brain(feature_cache=cache)
        with torch.no_grad():
            out = brain.compute_forward(batch, sb.Stage.VALID)
        outputs.append(out["student"].strong)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-3)


# ---------------------------------------------------------------------------
# The perturbation strength


def test_uniform_perturbation_redraws_only_the_strength():
    batch = 4000
    x = torch.randn(batch, 1)
    groups = [torch.arange(batch)]
    torch.manual_seed(3)
    beta_x, beta = ConditionalMixup(prob=0.5, tau=0.75)([x], groups)
    torch.manual_seed(3)
    uni_x, uni = ConditionalMixup(prob=0.5, tau=0.75, perturbation="uniform")(
        [x], groups
    )
    # Same rows, partners and modes; compositions keep their coefficient.
    for key in ("mixed", "composition", "perturbation", "partner"):
        assert torch.equal(getattr(beta, key), getattr(uni, key))
    assert torch.equal(beta.lam[beta.composition], uni.lam[uni.composition])
    partner = 1 - uni.lam[uni.perturbation]
    # U(0, min(0.4, 1 - tau)): strictly below 1 - tau = 0.25, median 0.125
    # (the folded Beta(0.2, 0.2) about 0.02).
    assert partner.min() >= 0 and partner.max() < 0.25
    assert 0.11 < float(partner.median()) < 0.14
    assert float((1 - beta.lam[beta.perturbation]).median()) < 0.05
    # The mixed input follows the new coefficient.
    lam = uni.lam.view(-1, 1)
    expected = torch.where(
        uni.mixed.view(-1, 1), lam * x + (1 - lam) * x[uni.partner], x
    )
    assert torch.allclose(uni_x[0], expected)
    assert not torch.allclose(uni_x[0], beta_x[0])


def test_perturbation_choice_is_checked():
    with pytest.raises(ValueError, match="perturbation must be"):
        ConditionalMixup(perturbation="gauss")
    with pytest.raises(ValueError, match="max_partner_weight"):
        ConditionalMixup(perturbation="uniform", max_partner_weight=0.6)


# ---------------------------------------------------------------------------
# The gradient-norm diagnostic


class TinyStudent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)

    def forward(self, x):
        from types import SimpleNamespace

        strong = torch.sigmoid(self.layer(x)).transpose(1, 2)  # [B, C, T]
        return SimpleNamespace(strong=strong, weak=strong.mean(-1))


def predictions_of(student, x):
    from speechbrain_sed_condmix.augment.mixup import MixInfo

    gen = torch.Generator().manual_seed(1)
    out = student(x)
    teacher = student(x + 0.3).__dict__
    teacher = type(out)(**{k: v.detach() for k, v in teacher.items()})
    return {
        "student": out,
        "teacher": teacher,
        "strong_targets": (
            torch.rand(out.strong.shape, generator=gen) > 0.5
        ).float(),
        "weak_targets": torch.ones(out.weak.shape),
        "is_strong": torch.tensor([True, False, False]),
        "is_weak": torch.tensor([False, True, False]),
        "mix": MixInfo.identity(3),
        "teacher_input": "mixed",
    }


def make_objective(log_grad_norms):
    return SEDObjective(
        {
            "strong": SupervisedBCE("strong"),
            "consistency": MeanTeacherConsistency(
                weight=2.0, rampup=lambda step, steps_per_epoch: 0.5
            ),
        },
        log_grad_norms=log_grad_norms,
    )


def test_grad_norms_match_separate_backward_passes():
    torch.manual_seed(0)
    student = TinyStudent()
    x = torch.randn(3, 5, 3)
    modules = {"student": student}
    loss, logged = make_objective(True)(
        predictions_of(student, x), modules, train=True
    )
    # Independent: each term's own backward pass, at its full weight.
    expected = {}
    for name, weight in (("strong", 1.0), ("consistency", 2.0)):
        student.zero_grad()
        preds = predictions_of(student, x)
        term = make_objective(False).terms[name]
        if name == "strong":
            value, _ = term.loss(preds, modules)
        else:
            rows, _, _ = term.row_losses(preds, modules)
            value = rows.mean()
        (weight * value).backward()
        expected[name] = float(
            torch.sqrt(sum(p.grad.square().sum() for p in student.parameters()))
        )
    for name, norm in expected.items():
        assert float(logged[f"grad_norm_{name}"]) == pytest.approx(norm)
    # The step's own backward still works (the graph was kept), and the
    # total is that of the objective without the diagnostic.
    student.zero_grad()
    loss.backward()
    plain_loss, plain = make_objective(False)(
        predictions_of(student, x), modules, train=True
    )
    assert loss.item() == pytest.approx(plain_loss.item())
    assert not any(k.startswith("grad_norm") for k in plain)


def test_no_grad_norms_outside_training():
    student = TinyStudent()
    preds = predictions_of(student, torch.randn(3, 5, 3))
    with torch.no_grad():
        _, logged = make_objective(True)(preds, {"student": student}, False)
    assert not any(k.startswith("grad_norm") for k in logged)
