"""benchmarks/pretrain_probe.py, the linear-probe gate of ATST-Frame
pretraining: its paired statistics against a hand computation, the gate's
decision, the probe on toys it must solve (linearly separable) and must not
(random labels), the selection on synth_val only, the two encoders' seed
rule, and the skipping of finished runs. No pretraining runs.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "pretrain_probe.py"
TINY_SHAPE = [
    "--atst_dim=32",
    "--atst_depth=1",
    "--atst_heads=4",
    "--head_hidden=16",
    "--head_out=8",
]


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("pretrain_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(seed, pretrained, random):
    return {
        "seed": seed,
        "validation": {
            "pretrained": {"frame_map": pretrained, "psds1": pretrained / 2},
            "random": {"frame_map": random, "psds1": random / 2},
        },
    }


def test_paired_statistics_match_a_hand_computation(probe):
    stats = probe.paired_stats(
        {1: 0.52, 2: 0.61, 3: 0.47, 4: 0.55},
        {1: 0.40, 2: 0.58, 3: 0.45, 4: 0.41, 5: 0.90},  # 5 has no pair
    )
    # By hand: diffs 0.12, 0.03, 0.02, 0.14; mean 0.0775; squared
    # deviations 0.00180625 + 0.00225625 + 0.00330625 + 0.00390625
    # = 0.011275; sd = sqrt(0.011275 / 3); SE = sd / sqrt(4).
    assert stats["n"] == 4 and stats["seeds"] == [1, 2, 3, 4]
    assert stats["diffs"] == pytest.approx([0.12, 0.03, 0.02, 0.14])
    assert stats["mean"] == pytest.approx(0.0775)
    assert stats["sd"] == pytest.approx(math.sqrt(0.011275 / 3))
    assert stats["se"] == pytest.approx(math.sqrt(0.011275 / 3) / 2)
    assert stats["t"] == pytest.approx(0.0775 / (math.sqrt(0.011275 / 3) / 2))
    one = probe.paired_stats({1: 0.5}, {1: 0.25})
    assert one["n"] == 1 and one["mean"] == 0.25 and one["se"] is None


def test_gate_passes_only_above_two_paired_se_over_three_seeds(probe):
    assert probe.gate_decision({"n": 3, "mean": 0.1, "se": 0.049})
    assert not probe.gate_decision({"n": 3, "mean": 0.1, "se": 0.05})
    assert not probe.gate_decision({"n": 2, "mean": 0.1, "se": 0.001})
    assert not probe.gate_decision({"n": 3, "mean": -0.1, "se": 0.001})
    assert not probe.gate_decision({"n": 1, "mean": 0.1, "se": None})
    # From records: diffs 0.10, 0.12, 0.08 (mean 0.1, SE 0.011547) pass;
    # diffs 0.10, 0.30, -0.10 (mean 0.1, SE 0.11547) do not.
    good = [_record(1, 0.6, 0.5), _record(2, 0.62, 0.5), _record(3, 0.58, 0.5)]
    summary = probe.summarise(good, metrics=("frame_map", "psds1"))
    assert summary["gate"]["passes"]
    assert summary["gate"]["se"] == pytest.approx(0.02 / math.sqrt(3))
    assert summary["gate"]["mdd"] == pytest.approx(0.04 / math.sqrt(3))
    assert summary["paired"]["psds1"]["mean"] == pytest.approx(0.05)
    assert summary["paired"]["frame_map"]["random_mean"] == pytest.approx(0.5)
    bad = [_record(1, 0.6, 0.5), _record(2, 0.8, 0.5), _record(3, 0.4, 0.5)]
    assert not probe.summarise(bad, metrics=("frame_map",))["gate"]["passes"]


def _toy(seed, n_clips=20, frames=50, dim=8, n_classes=3, random=False):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_clips, frames, dim, generator=generator) * 3 + 1
    if random:
        y = torch.rand(n_clips, frames, n_classes, generator=generator) < 0.5
    else:
        weights = torch.randn(dim, n_classes, generator=torch.Generator())
        y = x @ weights > 0.0
    return x, y.float()


def test_average_precision_and_f1_by_hand(probe):
    import numpy as np

    # Ranked: 0.9 (+), 0.8 (-), 0.8 (+) tied, 0.3 (-), 0.2 (+). Thresholds
    # 0.9: P 1/1, R 1/3; 0.8: P 2/3, R 2/3; 0.3: P 2/4; 0.2: P 3/5, R 1.
    scores = np.array([0.8, 0.2, 0.9, 0.3, 0.8])
    labels = np.array([False, True, True, False, True])
    ap = probe.average_precision(scores, labels)
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 5)
    # Two classes; class 1 has no positive frame and is left out.
    probs = np.stack([scores, np.zeros(5)], -1)[None]
    targets = np.stack([labels, np.zeros(5, bool)], -1)[None]
    metrics = probe.frame_metrics(probs, targets)
    assert metrics["frame_map"] == pytest.approx(ap)
    # At 0.5: active 0.8, 0.9, 0.8 -> TP 2, FP 1, FN 1: F1 = 4 / 6.
    assert metrics["frame_f1"] == pytest.approx(4 / 6)
    assert metrics["frame_accuracy"] == pytest.approx(8 / 10)


def test_probe_reaches_near_perfect_accuracy_on_a_separable_toy(probe):
    torch.manual_seed(0)
    x, y = _toy(0)
    x_test, y_test = _toy(1)
    model, _ = probe.train_probe(
        x, y, lr=0.05, epochs=30, seed=0, batch_size=100
    )
    probs = probe.probe_logits(model, x_test)
    metrics = probe.frame_metrics(probs, y_test)
    assert metrics["frame_accuracy"] > 0.98
    assert metrics["frame_map"] > 0.99


def test_probe_stays_at_chance_on_random_labels(probe):
    x, y = _toy(0, random=True)
    x_test, y_test = _toy(1, random=True)
    model, _ = probe.train_probe(
        x, y, lr=0.05, epochs=30, seed=0, batch_size=100
    )
    metrics = probe.frame_metrics(probe.probe_logits(model, x_test), y_test)
    # 3,000 held-out decisions: 3 SE of an accuracy of 0.5 is 0.027.
    assert abs(metrics["frame_accuracy"] - 0.5) < 0.03
    # Average precision of uninformative scores is the prevalence, 0.5.
    assert abs(metrics["frame_map"] - 0.5) < 0.04


def test_probe_is_chosen_on_synth_val_only(probe):
    x, y = _toy(0)
    data = {"train": (x, y), probe.SELECT_SUBSET: _toy(1)}
    x_rep, y_rep = _toy(2)
    choices = []
    for labels in (y_rep, 1 - y_rep):  # the reporting labels, then flipped
        data[probe.REPORT_SUBSET] = (x_rep, labels)
        choice, probs = probe.select_and_score(
            data, seed=0, lrs=(1e-3, 0.05), epochs=(2, 20)
        )
        choices.append(choice)
    assert [c["lr"] for c in choices] == [0.05, 0.05]
    assert choices[0]["epochs"] == choices[1]["epochs"] == 20
    assert choices[0]["synth_val_grid"] == choices[1]["synth_val_grid"]
    assert len(choices[0]["synth_val_grid"]) == 4
    # The same probe, so flipped labels score far worse on validation.
    assert choices[0]["validation"]["frame_accuracy"] > 0.9
    assert choices[1]["validation"]["frame_accuracy"] < 0.1
    assert choices[0]["at_grid_edge"]


def test_the_random_encoder_is_the_pretraining_initialisation(probe, tmp_path):
    from speechbrain_sed_condmix.pretraining.model import (
        MomentumTeacher,
        save_pretrain_checkpoint,
    )

    # A "pretrained" file: the seed-7 initialisation, its teacher shifted.
    frontend, enc = probe.build_encoders(7, TINY_SHAPE, None, tmp_path)
    _, other = probe.build_encoders(8, TINY_SHAPE, None, tmp_path)
    # Another seed, another initialisation.
    assert not torch.equal(enc["random"].pos_embed, other["random"].pos_embed)
    from speechbrain_sed_condmix.lobes.heads import ATSTFrameHead
    from speechbrain_sed_condmix.pretraining.model import ATSTFrameBYOL

    student = ATSTFrameBYOL(
        enc["random"],
        ATSTFrameHead(32, 16, 8),
        ATSTFrameHead(8, 16, 8),
    )
    teacher = MomentumTeacher(student)
    with torch.no_grad():
        for param in teacher.model.encoder.parameters():
            param.add_(1.0)
    path = tmp_path / "atst_frame_pretrain.ckpt"
    save_pretrain_checkpoint(path, student, teacher, {"epoch": 1})
    _, loaded = probe.build_encoders(7, TINY_SHAPE, path, tmp_path)
    # The same seed and shape rebuild the same initialisation (every
    # tensor), and "pretrained" holds the file's teacher encoder.
    fresh, random = enc["random"].state_dict(), loaded["random"].state_dict()
    assert all(torch.equal(v, random[k]) for k, v in fresh.items())
    assert not torch.equal(loaded["pretrained"].pos_embed, fresh["pos_embed"])
    assert torch.equal(
        loaded["pretrained"].pos_embed, teacher.model.encoder.pos_embed
    )
    assert not any(p.requires_grad for p in loaded["pretrained"].parameters())


def test_finished_runs_are_skipped_and_stopped_ones_rerun(
    probe, tmp_path, monkeypatch
):
    records, run = tmp_path / "records", tmp_path / "run"
    key = probe.record_key("ssl", 8000, probe.PRETRAIN_FLAGS)
    assert probe.plan_seed(records, key, 1, run) == "pretrain"
    calls = []

    def fake_run(cmd, returncode):
        def run_(*args, **kwargs):
            calls.append(cmd)
            return subprocess.CompletedProcess(args[0], returncode)

        return run_

    # Stopped (exit 75, checkpointed): no marker, so the next call reruns.
    monkeypatch.setattr(probe.subprocess, "run", fake_run("stop", 75))
    status = probe.run_pretraining(1, "pool", run, [], "cpu", 1)
    assert status.startswith("stopped") and not probe.pretrain_done(run)
    assert probe.plan_seed(records, key, 1, run) == "pretrain"
    monkeypatch.setattr(probe.subprocess, "run", fake_run("finish", 0))
    assert probe.run_pretraining(1, "pool", run, [], "cpu", 1).startswith(
        "done"
    )
    assert probe.plan_seed(records, key, 1, run) == "probe"
    # A finished run is not started again.
    monkeypatch.setattr(probe.subprocess, "run", fake_run("again", 0))
    assert probe.run_pretraining(1, "pool", run, [], "cpu", 1).startswith(
        "skipped"
    )
    assert calls == ["stop", "finish"]
    assert len((run / "wall_seconds.txt").read_text().split()) == 2
    # A recorded seed is skipped whatever its folder holds (or lacks).
    path = probe.record_path(records, key, 2)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_record(2, 0.6, 0.5)))
    assert probe.plan_seed(records, key, 2, tmp_path / "absent") == "recorded"
    assert [r["seed"] for r in probe.load_records(records, key)] == [2]
    # Another setting, another key: its records do not count.
    flags = probe.merge_flags(probe.PRETRAIN_FLAGS, ["--number_of_epochs=40"])
    assert "--number_of_epochs=40" in flags and len(flags) == len(
        probe.PRETRAIN_FLAGS
    )
    other = probe.record_key("ssl", 8000, flags)
    assert other != key
    assert probe.plan_seed(records, other, 2, tmp_path / "absent") == (
        "pretrain"
    )


def test_loss_curve_reads_speechbrains_train_log(probe, tmp_path):
    from speechbrain.utils.train_logger import FileTrainLogger

    log = FileTrainLogger(tmp_path / "train_log.txt")
    for epoch, loss in ((1, 1.29), (2, 0.675)):
        log.log_stats(
            stats_meta={"epoch": epoch, "steps": 12 * epoch},
            train_stats={"loss": loss, "lr": 9.2e-4},
        )
    curve = probe.loss_curve(tmp_path / "train_log.txt")
    assert [(c["epoch"], c["steps"]) for c in curve] == [(1, 12), (2, 24)]
    # FileTrainLogger keeps 2 decimals (3 significant digits).
    assert [c["loss"] for c in curve] == [1.29, 0.675]
    assert curve[0]["lr"] == pytest.approx(9.2e-4)


@pytest.mark.parametrize("passes", [True, False])
def test_the_report_carries_the_verdict_the_ablation_reads(
    probe, tmp_path, passes
):
    """The probe's report JSON holds the top-level ``gate_passed`` that
    benchmarks/pretrain_ablation.py checks before any stage-2 arm."""
    spec = importlib.util.spec_from_file_location(
        "pretrain_ablation", SCRIPT.parent / "pretrain_ablation.py"
    )
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    pretrained = [0.6, 0.62, 0.58] if passes else [0.6, 0.8, 0.4]
    records = [_record(s + 1, p, 0.5) for s, p in enumerate(pretrained)]
    for r in records:
        r["pretraining"] = {
            "loss_curve": [{"epoch": 1, "steps": 12, "loss": 1.0}]
        }
    probe.report(records, "pretrain_probe_test", "k", {}, folder=tmp_path)
    data = json.loads((tmp_path / "pretrain_probe_test.json").read_text())
    assert data["gate_passed"] is passes
    assert data["gate_passed"] == data["gate"]["passes"]
    path = tmp_path / "pretrain_probe_test.json"
    if passes:
        assert ablation.check_probe_gate(path)["gate_passed"] is True
    else:
        with pytest.raises(SystemExit, match="gate_passed: false"):
            ablation.check_probe_gate(path)
