"""benchmarks/pretrain_ablation.py: each arm one switch from its neighbour,
the paired statistics, the probe gate's refusal and the skipping of
recorded runs, on made-up records and a fake recipe (no training).

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from speechbrain_sed_condmix.lobes.atst import ATSTFrame
from speechbrain_sed_condmix.lobes.heads import ATSTFrameHead
from speechbrain_sed_condmix.pretraining.model import (
    ATSTFrameBYOL,
    MomentumTeacher,
    save_pretrain_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "pretrain_ablation.py"


@pytest.fixture(scope="module")
def abl():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("pretrain_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ckpt(tmp_path):
    """A tiny pretraining checkpoint: 16-d, 1 block, heads 24 -> 8."""
    torch.manual_seed(0)
    encoder = ATSTFrame(embed_dim=16, depth=1, num_heads=2, max_tokens=10)
    student = ATSTFrameBYOL(
        encoder,
        ATSTFrameHead(16, hidden_size=24, output_size=8),
        ATSTFrameHead(8, hidden_size=24, output_size=8),
    )
    path = tmp_path / "atst_frame_pretrain.ckpt"
    hyper = {"embed_dim": 16, "depth": 1, "num_heads": 2}
    save_pretrain_checkpoint(path, student, MomentumTeacher(student), hyper)
    return path


ARCH = {
    "atst_dim": 16,
    "atst_depth": 1,
    "atst_heads": 2,
    "projector_hidden": 24,
    "projection_size": 8,
}


def _args(abl, tmp_path, ckpt, *argv):
    args = abl.build_parser().parse_args(
        ["--out", str(tmp_path / "out"), "--ckpt", str(ckpt), *argv]
    )
    args.records = str(tmp_path / "records")
    args.measured = str(tmp_path / "measured")
    args.steps_per_epoch = 6
    args.arch = dict(ARCH)
    args.ckpt_sha = "0" * 64
    return args


def _diff(a, b):
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def test_each_arm_is_one_switch_from_its_neighbour(abl, tmp_path, ckpt):
    args = _args(abl, tmp_path, ckpt)
    arms = abl.arm_settings(args, ARCH, ckpt)
    v1 = arms["v1_mt_ict"]
    assert v1["mixup_tau"] == 1.0 and v1["contrastive_weight"] == 0.0
    # Each switch, written out here independently of ARMS.
    expected = {
        ("s2_supervised", "v1_mt_ict"): {"const_max", "pseudo_label_weight"},
        ("condmix", "v1_mt_ict"): {"mixup_tau"},
        ("condmix_contrast", "condmix"): {"contrastive_weight"},
        ("contrast_random_heads", "condmix_contrast"): {
            "contrastive_heads_ckpt"
        },
    }
    for (arm, neighbour), keys in expected.items():
        assert abl.NEIGHBOURS[arm] == neighbour
        assert _diff(arms[arm], arms[neighbour]) == keys, arm
    assert arms["s2_supervised"]["const_max"] == 0.0
    assert arms["s2_supervised"]["pseudo_label_weight"] == 0.0
    assert arms["condmix"]["mixup_tau"] == 0.75
    assert arms["condmix_contrast"]["contrastive_weight"] == 1.0
    assert arms["condmix_contrast"]["contrastive_heads_ckpt"] == str(ckpt)
    assert arms["contrast_random_heads"]["contrastive_heads_ckpt"] is None
    # The recipe flags differ the same way, and the heads fit the file.
    stage1, stage2 = abl.build_setups(args, ARCH, args.ckpt_sha)
    flags = {a: set(o) for a, (_, o, _) in stage2["arms"].items()}
    assert flags["contrast_random_heads"] ^ flags["condmix_contrast"] == {
        "--contrastive_heads_ckpt=null",
        f"--contrastive_heads_ckpt={ckpt.resolve()}",
    }
    assert flags["condmix"] ^ flags["v1_mt_ict"] == {
        "--mixup_tau=0.75",
        "--mixup_tau=1.0",
    }
    assert "--projector_hidden=24" in flags["condmix_contrast"]
    assert "--embedding_tap=encoder_embeddings" in flags["condmix_contrast"]
    assert {y for y, _, _ in stage2["arms"].values()} == {"atst_sedv2.yaml"}
    # Stage 1 and stage 2 share the model (a strict load between them).
    s1 = set(stage1["arms"]["s1_frozen"][1])
    for flag in ("--atst_dim=16", "--rnn_hidden=64", "--batch_sizes=[2,4,4,8]"):
        assert flag in s1 and all(flag in f for f in flags.values())
    assert f"--atst_ckpt={ckpt.resolve()}" in s1
    # Contract names: v1, supervised, contrast, random.
    names = abl.STAGE2_ARMS
    assert [a for a in names if "supervised" in a] == ["s2_supervised"]
    assert [a for a in names if "v1" in a] == ["v1_mt_ict"]
    contrast = [a for a in names if "contrast" in a]
    assert contrast == ["condmix_contrast", "contrast_random_heads"]
    assert [a for a in contrast if "random" in a] == ["contrast_random_heads"]
    assert set(arms) == set(abl.STAGE2_ARMS)
    # Distinct arms, distinct record keys; another checkpoint, new keys.
    assert len(set(stage2["keys"].values())) == len(arms)
    _, other = abl.build_setups(args, ARCH, "1" * 64)
    assert not set(other["keys"].values()) & set(stage2["keys"].values())


def test_architecture_is_read_from_the_checkpoint(abl, ckpt, tmp_path):
    assert abl.checkpoint_architecture(ckpt) == ARCH
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"depth": 1}}, bare)
    with pytest.raises(SystemExit, match="embed_dim"):
        abl.checkpoint_architecture(bare)


# ---------------------------------------------------------------------------
# Probe gate


def _probe(folder, name="pretrain_probe_ssl.json", **content):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(content))
    return path


def test_gate_refuses_unless_gate_passed_is_true(abl, tmp_path):
    measured = tmp_path / "measured"
    with pytest.raises(SystemExit, match="no probe gate result"):
        abl.find_probe_json(measured)
    path = _probe(measured, gate_passed=False, pretrained={}, random={})
    assert abl.find_probe_json(measured) == path
    with pytest.raises(SystemExit, match="gate_passed: false"):
        abl.check_probe_gate(path)
    for bad in ({"gate_passed": "yes"}, {"passes": True}):
        path.write_text(json.dumps(bad))
        with pytest.raises(SystemExit, match="top-level boolean"):
            abl.check_probe_gate(path)
    path.write_text("{\n  oops")
    with pytest.raises(SystemExit, match="line 2"):
        abl.check_probe_gate(path)
    path.write_text(json.dumps({"gate_passed": True}))
    assert abl.check_probe_gate(path)["gate_passed"] is True
    _probe(measured, "pretrain_probe_other.json", gate_passed=True)
    with pytest.raises(SystemExit, match="several probe results"):
        abl.find_probe_json(measured)


def test_main_refuses_stage2_before_running_anything(
    abl, tmp_path, ckpt, monkeypatch
):
    measured = tmp_path / "measured"
    _probe(measured, gate_passed=False)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--ckpt", str(ckpt), "--measured", str(measured)]
    with pytest.raises(SystemExit, match="stage 2 refused"):
        abl.main(argv)
    assert not out.exists()
    args = _args(abl, tmp_path, ckpt, "--ignore-gate")
    assert abl.gate_status(args) == {"overridden": True, "gate_passed": None}

    # --stage stage1 needs no gate: it goes on to the data.
    class Reached(Exception):
        pass

    def prepare(out, scale):
        raise Reached

    monkeypatch.setattr(abl.cma, "prepare", prepare)
    with pytest.raises(Reached):
        abl.main([*argv, "--stage", "stage1"])


# ---------------------------------------------------------------------------
# Runs: skipping recorded ones, stage 1 rerun only where stage 2 needs it


def _fake_recipe(calls, psds2):
    """Stands for subprocess.run of the recipe: writes its outputs."""

    def run(cmd, **kwargs):
        cmd = [str(c) for c in cmd]
        calls.append(cmd)
        value = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--"))
        folder = Path(value["output_folder"])
        arm, seed = folder.parent.name, int(folder.name)
        score = psds2.get((arm, seed), 0.1)
        model = {"psds1": score / 2, "psds2": score, "intersection_f1": 0.5}
        (folder / "metrics.json").write_text(
            json.dumps({"teacher": model, "student": model})
        )
        (folder / "train_log.txt").write_text(
            f"epoch: 20, lr: 1e-3 - valid teacher_psds1: {score / 2}, "
            f"valid teacher_psds2: {score}, valid student_psds1: 0.1\n"
        )

        class Done:
            returncode = 0

        return Done()

    return run


def _ran(calls):
    return sorted(
        (Path(v.split("=", 1)[1]).parent.name, int(Path(v).name))
        for c in calls
        for v in c
        if v.startswith("--output_folder=")
    )


def test_recorded_runs_are_skipped(abl, tmp_path, ckpt, monkeypatch):
    calls = []
    monkeypatch.setattr(abl.cma.subprocess, "run", _fake_recipe(calls, {}))
    args = _args(abl, tmp_path, ckpt, "--seeds", "1", "--ignore-gate")
    stage1, stage2 = abl.build_setups(args, ARCH, args.ckpt_sha)
    out = tmp_path / "out"
    gate = abl.gate_status(args)

    def run(seed=1):
        calls.clear()
        seed_args = type(args)(**vars(args), seed_now=seed)
        return abl.run_seed(seed_args, stage1, stage2, None, out, out, gate)

    statuses = dict(run())
    assert _ran(calls) == sorted(
        [("s1_frozen", 1)] + [(a, 1) for a in abl.STAGE2_ARMS]
    )
    assert all(s.startswith("done") for s in statuses.values())
    for cmd in calls[1:]:
        assert f"--stage1_ckpt={out / 's1_frozen' / '1'}" in cmd
    record = json.loads(abl.cma.record_path(stage2, "condmix", 1).read_text())
    assert record["gate"]["overridden"] is True
    assert record["key"] == stage2["keys"]["condmix"]
    # Everything recorded: nothing runs, even without the run folders.
    import shutil

    shutil.rmtree(out)
    statuses = dict(run())
    assert calls == []
    assert set(statuses.values()) == {"skipped (recorded)"}
    # One stage-2 record missing on a machine without the runs: stage 1
    # runs again (its checkpoints are needed), then that arm only.
    abl.cma.record_path(stage2, "condmix_contrast", 1).unlink()
    run()
    assert _ran(calls) == [("condmix_contrast", 1), ("s1_frozen", 1)]


def test_paired_differences_and_mdd(abl, tmp_path, ckpt):
    args = _args(abl, tmp_path, ckpt, "--ignore-gate")
    stage1, stage2 = abl.build_setups(args, ARCH, args.ckpt_sha)
    v1 = [0.20, 0.22, 0.18, 0.25, 0.21, 0.19]
    gain = [0.03, 0.01, 0.04, 0.02, 0.00, 0.05]
    for seed in range(1, 7):
        for arm in abl.STAGE2_ARMS:
            value = v1[seed - 1] + (gain[seed - 1] if arm == "condmix" else 0)
            model = {"psds1": 0.1, "psds2": value, "intersection_f1": 0.4}
            record = {
                "arm": arm,
                "seed": seed,
                "test": {"teacher": model, "student": model},
                "synth_val_curve": [
                    {"epoch": 20, "steps": 120, "teacher_psds1": 0.1}
                ],
                "teacher_beats_student_on_test": False,
            }
            path = abl.cma.record_path(stage2, arm, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
    report = abl.build_report(args, stage1, stage2, abl.gate_status(args))
    mean = sum(gain) / 6
    se = math.sqrt(sum((g - mean) ** 2 for g in gain) / 5) / math.sqrt(6)
    vs = report["summary"]["condmix"]["vs"]["v1_mt_ict"]["psds2"]
    assert vs["n"] == 6
    assert vs["mean"] == pytest.approx(mean)
    assert vs["se"] == pytest.approx(se)
    mdd = report["minimal_detectable_difference_psds2"]
    assert mdd["condmix"]["v1_mt_ict"] == pytest.approx(2 * se)
    # Identical arms: a zero difference with zero SE.
    same = report["summary"]["contrast_random_heads"]["vs"]
    assert same["condmix_contrast"]["psds2"]["mean"] == 0.0
    assert report["complete"] is True and report["gate"]["overridden"]
