"""ATST-Frame pretraining parts against independent computations: the block
mask, the memory-bank mixup, the loss, the schedules, the momentum teacher
and the checkpoint layout that ATST-SED reads."""

import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from speechbrain_sed_condmix.lobes.atst import (
    ATSTFrame,
    load_atst_checkpoint,
    load_atst_heads,
)
from speechbrain_sed_condmix.lobes.atst_sed import ATSTSED
from speechbrain_sed_condmix.lobes.heads import ATSTFrameHead
from speechbrain_sed_condmix.pretrained import load_pretrained
from speechbrain_sed_condmix.pretraining.model import (
    ATSTFrameBYOL,
    MomentumTeacher,
    cosine_momentum,
    save_pretrain_checkpoint,
    symmetric_frame_loss,
)
from speechbrain_sed_condmix.pretraining.schedules import (
    PretrainSchedule,
    cosine_weight_decay,
    pretrain_param_groups,
    warmup_cosine_lr,
)
from speechbrain_sed_condmix.pretraining.views import (
    FrequencyResizeCrop,
    MemoryBankMixup,
    block_mask,
)
from speechbrain_sed_condmix.teacher import EMATeacher


def tiny_student(dim=16, tokens=10, seed=0):
    torch.manual_seed(seed)
    encoder = ATSTFrame(embed_dim=dim, depth=1, num_heads=2, max_tokens=tokens)
    projector = ATSTFrameHead(dim, hidden_size=24, output_size=8)
    predictor = ATSTFrameHead(8, hidden_size=24, output_size=8)
    return ATSTFrameBYOL(encoder, projector, predictor)


# ---------------------------------------------------------------------------
# Block mask


def runs(row):
    """Lengths of the maximal runs of True in a 1-D bool array."""
    padded = np.concatenate([[0], row.astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


def exact_masked_share(n_tokens=250, length=5, prob=0.65):
    """Expected share of masked tokens: k starts drawn without replacement
    from n_tokens - length, k = int(prob * n / length + u)."""
    n_starts = n_tokens - length
    base = prob * n_tokens / length
    ks = {math.floor(base): 1 - (base - math.floor(base))}
    ks[math.floor(base) + 1] = 1 - ks[math.floor(base)]
    share = 0.0
    for k, p_k in ks.items():
        for t in range(n_tokens):
            covering = min(t, n_starts - 1) - max(0, t - length + 1) + 1
            covering = max(covering, 0)
            p_free = math.comb(n_starts - covering, k) / math.comb(n_starts, k)
            share += p_k * (1 - p_free) / n_tokens
    return share


def test_block_mask_share_matches_the_exact_expectation():
    gen = torch.Generator().manual_seed(0)
    mask = block_mask(3000, 250, generator=gen).numpy()
    per_clip = mask.mean(axis=1)
    expected = exact_masked_share()
    se = per_clip.std() / math.sqrt(len(per_clip))
    assert abs(per_clip.mean() - expected) < 4 * se
    assert 0.49 < expected < 0.52  # about half, as ATST-Frame reports
    # The first token is masked only by a span starting at 0: k / 245.
    assert abs(mask[:, 0].mean() - 32.5 / 245) < 0.02
    # Spans are whole: every maximal run of masked tokens has >= 5 tokens,
    # and 32 or 33 spans cover at most 165 tokens.
    for row in mask[:200]:
        assert runs(row).min() >= 5
        assert 5 <= row.sum() <= 33 * 5


def test_block_mask_keeps_min_masks_and_its_shape():
    gen = torch.Generator().manual_seed(1)
    mask = block_mask(500, 20, mask_prob=0.01, generator=gen).numpy()
    # k = max(2, int(0.04 + u)) = 2 spans of 5: 5 to 10 tokens.
    counts = mask.sum(axis=1)
    assert counts.min() >= 5 and counts.max() <= 10
    assert (counts == 10).mean() > 0.5  # two spans rarely overlap
    with pytest.raises(ValueError, match="span"):
        block_mask(1, 5)


def test_masked_tokens_get_the_mask_embedding():
    encoder = ATSTFrame(embed_dim=8, depth=0, num_heads=2, max_tokens=6)
    encoder.norm_frame = torch.nn.Identity()
    x = torch.randn(2, 64, 24)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 2] = mask[1, 5] = True
    out = encoder(x, mask=mask)
    plain = encoder(x)
    expected = encoder.mask_embed[0, 0] + encoder.pos_embed[0, 1:7]
    assert torch.allclose(out[0, 2], expected[2])
    assert torch.allclose(out[1, 5], expected[5])
    assert torch.equal(out[~mask], plain[~mask])
    with pytest.raises(ValueError, match="mask"):
        encoder(x, mask=mask[:, :5])


# ---------------------------------------------------------------------------
# Memory-bank mixup


def test_memory_bank_mixup_is_the_log_mix_exp_of_a_past_unmixed_input():
    torch.manual_seed(0)
    mix = MemoryBankMixup(ratio=0.4, bank_size=3)
    history = []  # the unmixed inputs, in order
    eps = np.finfo(np.float32).eps
    for step in range(5):
        x = torch.randn(2, 4, 6)
        out = mix(x)
        for i in range(len(x)):
            bank = history[-3:]  # FIFO of the 3 latest unmixed inputs
            a, partner = mix.last_ratio[i], mix.last_partner[i]
            if not bank:
                assert step == 0 and i == 0 and partner == -1
                assert torch.equal(out[i], x[i])
            else:
                assert 0 <= partner < len(bank) and 0.0 <= a < 0.4
                z = bank[partner].numpy().astype(np.float64)
                xi = x[i].numpy().astype(np.float64)
                want = np.log((1 - a) * np.exp(xi) + a * np.exp(z) + eps)
                np.testing.assert_allclose(
                    out[i].numpy(), want, rtol=1e-5, atol=1e-6
                )
            history.append(x[i].clone())
    assert len(mix.bank) == 3
    for kept, past in zip(mix.bank, history[-3:]):
        assert torch.equal(kept, past)


def test_memory_bank_ratios_are_uniform_and_the_bank_is_checkpointed(
    tmp_path,
):
    torch.manual_seed(1)
    mix = MemoryBankMixup(ratio=0.4, bank_size=4)
    mix(torch.zeros(1, 2, 2))
    ratios = []
    for _ in range(100):
        mix(torch.zeros(20, 2, 2))
        ratios += mix.last_ratio
    ratios = np.array(ratios)
    # U(0, 0.4): mean 0.2, sd 0.4 / sqrt(12)
    assert abs(ratios.mean() - 0.2) < 4 * 0.4 / math.sqrt(12 * len(ratios))
    assert ratios.min() >= 0 and ratios.max() < 0.4
    mix.bank[0] = torch.ones(2, 2)
    mix.save(tmp_path / "bank.ckpt")
    back = MemoryBankMixup(ratio=0.4, bank_size=4)
    back.load(tmp_path / "bank.ckpt")
    assert len(back.bank) == 4
    assert all(torch.equal(a, b) for a, b in zip(back.bank, mix.bank))


def test_frequency_crop_keeps_time_and_warps_bands():
    torch.manual_seed(0)
    x = torch.arange(8.0)[None, :, None].expand(1, 8, 5).contiguous()
    crop = FrequencyResizeCrop(freq_scale=(0.5, 0.5))  # h = 4 bands
    starts = set()
    for _ in range(40):
        out = crop(x)
        assert out.shape == x.shape
        # Corners aligned: band 0 and band 7 are the crop's first and last
        # bands i and i + 3; time is left alone.
        first, last = float(out[0, 0, 0]), float(out[0, -1, 0])
        assert first == pytest.approx(round(first), abs=1e-5)
        assert last == pytest.approx(first + 3, abs=1e-5)
        assert torch.equal(out[..., :1].expand_as(out), out)
        starts.add(round(first))
    assert starts == {0, 1, 2, 3, 4}  # i uniform in [0, 8 - 4]


# ---------------------------------------------------------------------------
# Loss


def test_symmetric_loss_pairs_each_view_with_the_other():
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(6, 5, generator=gen, requires_grad=True)
    z = torch.randn(6, 5, generator=gen, requires_grad=True)
    loss = symmetric_frame_loss(p, z)
    pn, zn = p.detach().numpy(), z.detach().numpy()

    def cost(a, b):
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1)
        return 2 - 2 * cos / np.linalg.norm(b, axis=1)

    want = 0.5 * (cost(pn[3:], zn[:3]).mean() + cost(pn[:3], zn[3:]).mean())
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    loss.backward()
    assert z.grad is None and p.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        symmetric_frame_loss(p[:5], z[:5])


def test_student_returns_the_masked_frames_in_order():
    student = tiny_student().eval()
    x = torch.randn(2, 64, 40)
    mask = block_mask(2, 10, mask_length=2, generator=torch.Generator())
    out = student(x, mask)
    frames = student.encoder(x, mask=mask)[mask]
    want = student.predictor(student.projector(frames))
    assert torch.allclose(out, want, atol=1e-6)
    teacher = MomentumTeacher(student).eval()
    unmasked = student.projector(student.encoder(x)[mask])
    assert torch.allclose(teacher(x, mask), unmasked, atol=1e-6)


# ---------------------------------------------------------------------------
# Schedules and the momentum teacher


def test_momentum_schedule_values():
    total, base = 8, 0.996
    for t in range(total + 3):
        progress = min(t, total) / total
        want = 1 - (1 - base) * (np.cos(np.pi * progress) + 1) / 2
        assert cosine_momentum(t, total, base) == pytest.approx(want)
    assert cosine_momentum(0, total, base) == pytest.approx(base)
    assert cosine_momentum(4, total, base) == pytest.approx(0.998)
    assert cosine_momentum(8, total, base) == 1.0


def test_teacher_update_moves_parameters_only():
    student = tiny_student()
    teacher = MomentumTeacher(student)
    assert teacher.model.predictor is None
    assert not any(p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.projector[1].running_mean.fill_(5.0)
    teacher.update(student, momentum=0.9)
    own = dict(student.named_parameters())
    for name, value in teacher.model.state_dict().items():
        if name in own:
            want = 0.9 * before[name] + 0.1 * own[name].detach()
            assert torch.allclose(value, want, atol=1e-6), name
        else:  # BatchNorm buffers: the teacher's own
            assert torch.equal(value, before[name]), name


def test_weight_decay_and_lr_schedules():
    total = 20
    for t in (0, 5, 10, 20, 30):
        progress = min(t, total) / total
        want = 0.4 - 0.36 * (1 + np.cos(np.pi * progress)) / 2
        assert cosine_weight_decay(t, total) == pytest.approx(want)
    assert warmup_cosine_lr(0, 1.0, 4, 20) == 0.0
    assert warmup_cosine_lr(2, 1.0, 4, 20) == 0.5
    assert warmup_cosine_lr(4, 1.0, 4, 20, floor=0.1) == pytest.approx(1.0)
    mid = 0.1 + 0.9 * (1 + np.cos(np.pi * 8 / 16)) / 2
    assert warmup_cosine_lr(12, 1.0, 4, 20, floor=0.1) == pytest.approx(mid)
    assert warmup_cosine_lr(25, 1.0, 4, 20, floor=0.1) == pytest.approx(0.1)


def test_decay_groups_and_the_schedule_set_per_step():
    student = tiny_student()
    groups = pretrain_param_groups(student)
    names = {id(p): n for n, p in student.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    others = {names[id(p)] for p in groups[1]["params"]}
    assert {"encoder.pos_embed", "encoder.mask_embed"} <= decayed
    assert "projector.0.weight" in decayed
    assert all(not n.endswith(".bias") for n in decayed)
    assert {"encoder.norm_frame.weight", "projector.1.weight"} <= others
    assert len(decayed) + len(others) == len(names)
    opt = SimpleNamespace(param_groups=groups)
    schedule = PretrainSchedule(
        base_lr=0.256, warmup_epochs=1, min_lr=0.0, ema_base=0.99
    )
    # peak = 0.256 * 10 clips * 2 processes / 256 = 0.02; 5 steps per epoch
    m = schedule(
        opt, step=2, steps_per_epoch=5, epochs=4, batch_size=10, world=2
    )
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02 * 2 / 5)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(
        cosine_weight_decay(2, 20)
    )
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert m == pytest.approx(cosine_momentum(3, 20, 0.99))


# ---------------------------------------------------------------------------
# Checkpoint layout, read by load_atst_checkpoint and ATST-SED


@pytest.fixture
def pretrain_file(tmp_path):
    student = tiny_student(dim=16, tokens=10)
    teacher = MomentumTeacher(student)
    with torch.no_grad():  # a teacher that differs from its student
        for p in teacher.parameters():
            p.add_(0.01)
        teacher.model.projector[1].running_var.fill_(3.0)
    path = tmp_path / "atst_frame_pretrain.ckpt"
    save_pretrain_checkpoint(path, student, teacher, {"embed_dim": 16})
    return path, student, teacher


def test_checkpoint_has_the_pretraining_layout(pretrain_file):
    path, student, _ = pretrain_file
    ckpt = torch.load(path, weights_only=True)
    keys = set(ckpt["state_dict"])
    assert ckpt["hyper_parameters"] == {"embed_dim": 16}
    for part in ("student.encoder", "teacher.encoder"):
        assert f"model.{part}.pos_embed" in keys
        assert f"model.{part}.blocks.0.attn.qkv.weight" in keys
        assert f"model.{part}.norm_frame.weight" in keys
    for part in ("student.projector", "student.predictor", "teacher.projector"):
        for name in ("0.weight", "1.running_mean", "1.weight", "3.weight"):
            assert f"model.{part}.{name}" in keys
    assert not any(k.startswith("model.teacher.predictor") for k in keys)
    n_encoder = len(student.encoder.state_dict())
    n_heads = 2 * len(student.projector.state_dict())
    n_heads += len(student.predictor.state_dict())
    assert len(keys) == 2 * n_encoder + n_heads


def test_loaded_weights_equal_the_saved_ones(pretrain_file, caplog):
    path, student, teacher = pretrain_file
    encoder = ATSTFrame(embed_dim=16, depth=1, num_heads=2, max_tokens=10)
    heads = {
        "student_projector": ATSTFrameHead(16, 24, 8),
        "student_predictor": ATSTFrameHead(8, 24, 8),
        "teacher_projector": ATSTFrameHead(16, 24, 8),
    }
    with caplog.at_level(logging.INFO):
        n = load_atst_checkpoint(encoder, path, heads=heads)
    assert n == len(encoder.state_dict())
    # The encoder is the teacher's, as downstream ATST-Frame uses it.
    for name, value in teacher.model.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], value), name
    pairs = [
        (heads["student_projector"], student.projector),
        (heads["student_predictor"], student.predictor),
        (heads["teacher_projector"], teacher.model.projector),
    ]
    for loaded, saved in pairs:
        for name, value in saved.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], value), name
    assert f"student_projector loaded from {path}" in caplog.text
    assert sorted(load_atst_heads(path)) == sorted(heads)


def test_stage1_reads_the_checkpoint_without_conversion(pretrain_file):
    path, _, teacher = pretrain_file
    atst = ATSTFrame(embed_dim=16, depth=1, num_heads=2, max_tokens=10)
    sed = ATSTSED(atst, n_class=10, n_filters=[4] * 7, rnn_hidden=8)
    sed_teacher = EMATeacher(sed)
    what = load_pretrained(sed, sed_teacher, atst_ckpt=str(path))
    assert what == f"ATST-Frame checkpoint {path}"
    for model in (sed, sed_teacher.model):
        loaded = model.atst_frame.atst.state_dict()
        for name, value in teacher.model.encoder.state_dict().items():
            assert torch.equal(loaded[name], value), name
