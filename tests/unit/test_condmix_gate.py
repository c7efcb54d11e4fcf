"""benchmarks/condmix_ablation.py, gated protocol: the gate's rule, its
refusal of the ablation, the paired statistics and the skipping of runs
already recorded, on made-up records (no training).

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "condmix_ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("condmix_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(ablation, tmp_path, *argv):
    args, extra = ablation.build_parser().parse_known_args(
        ["--out", str(tmp_path / "out"), *argv]
    )
    for key, value in ablation.PROTOCOL_DEFAULTS["gated"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.extra = extra
    args.records = str(tmp_path / "records")
    args.steps_per_epoch = 12
    return args


def _record(arm, seed, psds2, key, psds1=0.3):
    model = {"psds1": psds1, "psds2": psds2, "intersection_f1": 0.5}
    return {
        "arm": arm,
        "seed": seed,
        "key": key,
        "test": {"teacher": dict(model), "student": dict(model)},
        "synth_val_curve": [
            {"epoch": 50, "steps": 600, "teacher_psds1": psds1}
        ],
        "teacher_beats_student_on_test": False,
    }


#: Made-up teacher PSDS2 by seed: Mean Teacher ahead on every seed.
SUP = [0.10, 0.12, 0.08, 0.11, 0.09, 0.13]
MT = [0.15, 0.16, 0.14, 0.17, 0.13, 0.18]


def _gate_records(setup, n=6, mt=MT):
    keys = setup["keys"]
    return [
        _record("s_supervised", s + 1, SUP[s], keys["s_supervised"])
        for s in range(n)
    ] + [_record("a_mt", s + 1, mt[s], keys["a_mt"]) for s in range(n)]


def test_gate_statistics_against_a_hand_computation(ablation, tmp_path):
    setup = ablation.gated_setup(_args(ablation, tmp_path))
    gate = ablation.gate_statistics(_gate_records(setup))
    diffs = [m - s for m, s in zip(MT, SUP)]
    mean = sum(diffs) / 6
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 5)
    assert gate["n"] == 6
    assert gate["mean"] == pytest.approx(mean)
    assert gate["se"] == pytest.approx(sd / math.sqrt(6))
    assert gate["mdd"] == pytest.approx(2 * sd / math.sqrt(6))
    assert gate["passes"] is True
    # Five seeds are not enough, however large the gain.
    assert not ablation.gate_statistics(_gate_records(setup, n=5))["passes"]
    # A gain within 2 SE does not pass.
    noisy = [0.20, 0.05, 0.15, 0.06, 0.14, 0.12]
    gate = ablation.gate_statistics(_gate_records(setup, mt=noisy))
    assert gate["n"] == 6 and gate["mean"] > 0
    assert gate["mean"] < 2 * gate["se"] and not gate["passes"]


def test_ablation_refused_unless_the_gate_passes(ablation, tmp_path):
    setup = ablation.gated_setup(_args(ablation, tmp_path))
    path = tmp_path / "gate.json"
    with pytest.raises(SystemExit, match="no gate result"):
        ablation.check_gate(path, setup)
    path.write_text(json.dumps({"runs": _gate_records(setup, n=5)}))
    with pytest.raises(SystemExit, match="does not pass.*n = 5"):
        ablation.check_gate(path, setup)
    path.write_text(json.dumps({"runs": _gate_records(setup)}))
    assert ablation.check_gate(path, setup)["passes"]
    # A gate of another protocol (other keys) does not count.
    other = ablation.gated_setup(_args(ablation, tmp_path, "--lr=0.003"))
    assert other["keys"]["a_mt"] != setup["keys"]["a_mt"]
    with pytest.raises(SystemExit, match="n = 0"):
        ablation.check_gate(path, other)
    # The command line enforces it before any run.
    with pytest.raises(SystemExit, match="no gate result"):
        ablation.main(
            [
                "--out",
                str(tmp_path / "out"),
                "--stage",
                "ablation",
                "--gate-json",
                str(tmp_path / "missing.json"),
                "--steps-per-epoch=12",
            ]
        )
    with pytest.raises(SystemExit):
        ablation.main(
            ["--out", str(tmp_path), "--stage", "gate", "--arms", "b_condmix"]
        )


def test_recorded_runs_are_skipped(ablation, tmp_path, monkeypatch):
    setup = ablation.gated_setup(_args(ablation, tmp_path))
    calls = []
    monkeypatch.setattr(
        ablation.subprocess, "run", lambda *a, **k: calls.append(a)
    )
    path = ablation.record_path(setup, "a_mt", 3)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_record("a_mt", 3, 0.2, setup["keys"]["a_mt"])))
    status = ablation.run_one(
        "a_mt", 3, "data", tmp_path / "prep", tmp_path, [], 1, setup
    )
    assert status == "skipped (recorded)" and calls == []
    # Another protocol's record of the same arm and seed is not skipped.
    other = ablation.gated_setup(_args(ablation, tmp_path, "--dropout=0.2"))
    assert not ablation.record_path(other, "a_mt", 3).is_file()
    assert [r["seed"] for r in ablation.load_records(setup, ["a_mt"])] == [3]
    assert ablation.load_records(other, ["a_mt"]) == []


def test_a_finished_run_is_recorded(ablation, tmp_path):
    setup = ablation.gated_setup(_args(ablation, tmp_path))
    folder = tmp_path / "out" / "a_mt" / "2"
    folder.mkdir(parents=True)
    model = {"psds1": 0.3, "psds2": 0.4, "intersection_f1": 0.5}
    (folder / "metrics.json").write_text(
        json.dumps({"student": model, "teacher": model})
    )
    (folder / "train_log.txt").write_text(
        "epoch: 50, lr: 1.00e-03 - train loss: 1.00e+00 - valid loss: "
        "3.00e-01, valid student_psds1: 2.00e-01, valid teacher_psds1: "
        "2.50e-01\n"
    )
    status = ablation.run_one(
        "a_mt", 2, "data", tmp_path, tmp_path / "out", [], 1, setup
    )
    assert status == "skipped (done)"
    record = json.loads(ablation.record_path(setup, "a_mt", 2).read_text())
    assert record["key"] == setup["keys"]["a_mt"]
    assert record["steps"] == 600 and record["test"]["teacher"] == model


def test_arms_are_one_switch_apart(ablation, tmp_path):
    args = _args(ablation, tmp_path, "--sup-lr=0.0005", "--sup-dropout=0.3")
    setup = ablation.gated_setup(args)
    arms = setup["arms"]
    sup, mt = set(arms["s_supervised"][1]), set(arms["a_mt"][1])
    assert mt == {"--lr=0.001", "--dropout=0.5"}
    # Supervised only: no unsupervised term, its own LR and dropout.
    assert sup == {"--const_max=0", "--lr=0.0005", "--dropout=0.3"}
    b, c = set(arms["b_condmix"][1]), set(arms["c_condmix_contrast_cnn"][1])
    assert c - b == {
        "--contrastive_weight=1.0",
        "--embedding_tap=cnn",
        "--contrastive_input_size=32",
    }
    assert all("contrast" in a for a in arms if a.startswith("c_"))
    shared = setup["protocol"]
    assert "--teacher_eval_mode=False" in shared
    assert "--filter_augment_prob=1.0" in shared


def test_mix_statistics_of_the_arms(ablation):
    b = ablation.arm_mix_statistics(
        "crnn_condmix.yaml",
        ["--mixup_tau=0.75", "--mixup_perturbation=uniform"],
        calls=60,
    )
    assert b["perturbation"]["max"] < 0.25 and b["composition"]["n"] > 0
    d = ablation.arm_mix_statistics(
        "crnn_condmix.yaml", ["--mixup_tau=1.0"], calls=60
    )
    assert d["perturbation"]["n"] == 0 and d["composition_share"] == 1.0
    mt = ablation.arm_mix_statistics(
        "crnn_mt.yaml", ["--batch_sizes=[4,4,8]"], calls=60
    )
    # crnn_mt mixes the labelled half only: 8 of 16 rows, in half the calls.
    assert mt["rows"] == 16 * 60 and mt["unmixed_group_rows"] == 8 * 60
    assert 0.15 < mt["mixed_share"] < 0.35


def test_tuned_arms_get_their_own_record_keys(ablation, tmp_path):
    """--tune-trials on the gated protocol: an arm's tuned flags join its
    own overrides, so its records never mix with untuned runs; an arm
    left untuned keeps its key, and the search space of a gated arm
    leaves out what the arm and the protocol set."""
    setup = ablation.gated_setup(_args(ablation, tmp_path))
    tuned = ablation.with_tuned_arms(
        setup, {"a_mt": ["--const_max=3.0"]}, "ssl"
    )
    assert tuned["arms"]["a_mt"][1] == setup["arms"]["a_mt"][1] + [
        "--const_max=3.0"
    ]
    assert tuned["keys"]["a_mt"] != setup["keys"]["a_mt"]
    assert tuned["keys"]["s_supervised"] == setup["keys"]["s_supervised"]
    flags = setup["protocol"] + setup["condmix"] + setup["schedule"]
    space = ablation.tuned_space("b_condmix", flags, setup)
    assert "mixup_tau" not in space and "contrastive_weight" not in space
    assert "pseudo_label_weight" in space
