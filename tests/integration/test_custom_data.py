"""Your own data: the generic format, custom classes, optional subsets.

The custom example (generated audio, 3 classes with their own names, 5 s
clips at 22.05 kHz, strong + unlabeled) runs through the recipe, the
export and sed-detect; the guardrails (classes and front end recorded in
the checkpoint) stop mismatched loads.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import recipe_rows, run_recipe

from speechbrain_sed_condmix.dataio.custom import prepare_sed_dataset
from speechbrain_sed_condmix.dataio.prep import SEDDataError
from speechbrain_sed_condmix.dataio.synth import (
    CUSTOM_EXAMPLE_CLASSES,
    generate_custom_example,
)
from speechbrain_sed_condmix.metadata import (
    METADATA_FILE,
    ModelMetadata,
    ModelMetadataError,
)

REPO = Path(__file__).resolve().parents[2]
CLASSES = sorted(CUSTOM_EXAMPLE_CLASSES)
CUSTOM_ROWS = {
    Path(r["Hparam_file"]).stem: r
    for r in recipe_rows()
    if r["Dataset"] == "Custom"
}
CUSTOM_ROW = CUSTOM_ROWS["custom_crnn"]


def row_flags(data, extra="", row=CUSTOM_ROW):
    flags = row["test_debug_flags"]
    return flags.replace("tests/tmp/custom_example_tiny", str(data)) + extra


@pytest.fixture(scope="module")
def custom_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom_example")
    return generate_custom_example(root / "data", scale="tiny", seed=0)


@pytest.fixture(scope="module")
def custom_run(custom_data, tmp_path_factory):
    """The custom_crnn row of tests/recipes/Custom.csv, one tiny epoch."""
    work = tmp_path_factory.mktemp("custom_run")
    out, _ = run_recipe(CUSTOM_ROW, custom_data, work, row_flags(custom_data))
    return out


def strong(data, subset):
    return {
        "tsv": data / subset / "strong.tsv",
        "audio": data / subset / "audio",
    }


def assert_row_files(row, out):
    """The files the row's test_debug_checks list exist."""
    names = re.search(r"file_exists=\[(.*?)\]", row["test_debug_checks"])
    for name in names[1].split(","):
        assert (out / name).is_file(), name


def checkpoint_of(out):
    return next((out / "save").glob("CKPT+*"))


# ----------------------------------------------------------------------
# The example, end to end


def test_custom_example_trains_and_reports_its_classes(custom_run):
    out = custom_run
    assert_row_files(CUSTOM_ROW, out)
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("student", "teacher"):
        assert sorted(metrics[model]["per_class"]) == CLASSES
        for values in metrics[model]["per_class"].values():
            assert 0.0 <= values["psds1"] <= 1.0
    assert (out / "classes.txt").read_text().split() == CLASSES
    # The resolved hparams keep the command-line overrides.
    saved = (out / "hyperparams.yaml").read_text()
    assert "\nnumber_of_epochs: 1\n" in saved
    assert "\nrnn_hidden: 32\n" in saved
    assert "\nbatch_sizes: [4, 4]\n" in saved
    record = json.loads((checkpoint_of(out) / METADATA_FILE).read_text())
    assert record["classes"] == CLASSES
    assert record["label_grid"]["audio_duration"] == 5.0
    assert record["frontend"]["melspec.n_mels"] == 128


def test_custom_example_prep_resamples_and_downmixes(custom_run):
    prep = custom_run / "prep"
    manifest = json.loads((prep / "unlabeled.json").read_text())
    wav = next(iter(manifest.values()))["wav"]
    info = sf.info(wav.replace("{cache_root}", str(prep / "audio_16k")))
    # generated as 22.05 kHz stereo
    assert (info.samplerate, info.channels) == (16000, 1)
    assert info.duration == pytest.approx(5.0, abs=1e-3)
    durations = pd.read_csv(prep / "test_durations.tsv", sep="\t")
    assert np.allclose(durations["duration"], 5.0)
    gt = pd.read_csv(prep / "test_gt.tsv", sep="\t")
    assert set(gt["event_label"]) <= set(CLASSES)


def test_custom_example_exports_and_detects_with_its_names(
    custom_run, custom_data, tmp_path
):
    from speechbrain_sed_condmix.cli import detect_main, export_main

    exported = tmp_path / "exported"
    assert export_main([str(custom_run), "--out", str(exported)]) == 0
    clip = custom_data / "test" / "audio" / "test_0000.wav"
    events = tmp_path / "events.tsv"
    code = detect_main(
        [
            str(clip),
            "--model",
            str(exported),
            "--out",
            str(events),
            "--scores",
            str(tmp_path / "scores"),
            "--quiet",
        ]
    )
    assert code == 0
    scores = pd.read_csv(next((tmp_path / "scores").glob("*.tsv")), sep="\t")
    assert list(scores.columns) == ["onset", "offset", *CLASSES]
    # 5 s windows of 64 ms frames, cut at the clip's length
    assert scores["offset"].max() == pytest.approx(5.0, abs=0.064)
    detected = pd.read_csv(events, sep="\t")
    assert set(detected["event_label"]) <= set(CLASSES)


# ----------------------------------------------------------------------
# Guardrails


def test_resume_with_other_classes_stops(custom_run, custom_data, tmp_path):
    """Same experiment folder, classes in another order: a clear stop."""
    work = tmp_path / "resume"
    shutil.copytree(custom_run, work / "out")
    reordered = ",".join(reversed(CLASSES))
    cmd = [
        sys.executable,
        CUSTOM_ROW["Script_file"],
        CUSTOM_ROW["Hparam_file"],
        *row_flags(custom_data, f" --classes=[{reordered}]")
        .replace("--number_of_epochs=1", "--number_of_epochs=2")
        .split(),
        f"--output_folder={work / 'out'}",
        "--device=cpu",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "ModelMetadataError" in output
    assert f"checkpoint {CLASSES}" in output
    assert f"YAML {list(reversed(CLASSES))}" in output


def test_export_refuses_other_classes_or_front_end(custom_run, tmp_path):
    from speechbrain_sed_condmix.inference import export_detector

    changed = tmp_path / "classes"
    shutil.copytree(custom_run, changed)
    (changed / "classes.txt").write_text("\n".join(reversed(CLASSES)))
    with pytest.raises(ModelMetadataError, match="classes: checkpoint"):
        export_detector(changed, tmp_path / "x")
    changed = tmp_path / "frontend"
    shutil.copytree(custom_run, changed)
    text = (changed / "hyperparams.yaml").read_text()
    assert "f_max: 8000.0" in text
    (changed / "hyperparams.yaml").write_text(
        text.replace("f_max: 8000.0", "f_max: 7000.0")
    )
    with pytest.raises(ModelMetadataError, match="f_max: checkpoint 8000.0"):
        export_detector(changed, tmp_path / "y")


def test_stage1_checkpoint_with_other_classes_is_refused(custom_run):
    from speechbrain_sed_condmix.lobes.crnn import CRNN
    from speechbrain_sed_condmix.pretrained import load_pretrained
    from speechbrain_sed_condmix.teacher import EMATeacher

    student = CRNN(n_class=2, n_filters=[4] * 7, rnn_hidden=4)
    with pytest.raises(ModelMetadataError, match="classes: checkpoint"):
        load_pretrained(
            student,
            EMATeacher(student),
            stage1_ckpt=str(custom_run),
            metadata=ModelMetadata(["bark", "chime"]),
        )


def test_clip_longer_than_atst_limit_stops_early():
    """ATST-Frame takes 10 s at most: the recipe check says so at once."""
    from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
    from speechbrain_sed_condmix.lobes.atst import ATSTFrame
    from speechbrain_sed_condmix.lobes.atst_sed import ATSTSED
    from speechbrain_sed_condmix.lobes.features import (
        ATSTMelFrontEnd,
        CNNMelFrontEnd,
        DualMelFrontEnd,
    )
    from speechbrain_sed_condmix.metadata import check_model_fits

    atst = ATSTFrame(embed_dim=16, depth=1, num_heads=2)
    model = ATSTSED(atst, n_class=2, n_filters=[4] * 7, rnn_hidden=4)
    frontend = DualMelFrontEnd(CNNMelFrontEnd(), ATSTMelFrontEnd())
    ok = FrameLabelEncoder(["a", "b"], audio_duration=10.0)
    check_model_fits(frontend, model, ok)
    too_long = FrameLabelEncoder(["a", "b"], audio_duration=12.0)
    with pytest.raises(ModelMetadataError, match="audio_duration 12.0 s"):
        check_model_fits(frontend, model, too_long)


# ----------------------------------------------------------------------
# The generic format and its checks


def test_unknown_classes_are_reported_with_file_and_line(custom_data, tmp_path):
    with pytest.raises(SEDDataError) as info:
        prepare_sed_dataset(
            tmp_path / "prep",
            train_strong=strong(custom_data, "train"),
            classes=["bark"],
            progress=False,
        )
    text = str(info.value)
    tsv = str(custom_data / "train" / "strong.tsv")
    rows = pd.read_csv(custom_data / "train" / "strong.tsv", sep="\t")
    bad = rows.index[rows["event_label"] != "bark"]
    # one problem per bad row, each naming the TSV and its line (header: 1)
    assert len(info.value.problems) == len(bad)
    assert f"{tsv}:{bad[0] + 2}: unknown label" in text


def test_eval_clips_longer_than_the_clip_length_are_refused(
    custom_data, tmp_path
):
    with pytest.raises(SEDDataError, match="more than the model's"):
        prepare_sed_dataset(
            tmp_path / "prep",
            train_strong=strong(custom_data, "train"),
            test_strong=strong(custom_data, "test"),
            classes=CLASSES,
            audio_duration=4.0,
            progress=False,
        )


def test_a_training_set_is_required(custom_data, tmp_path):
    with pytest.raises(ValueError, match="train_strong.*train_weak"):
        prepare_sed_dataset(
            tmp_path / "p",
            test_strong=strong(custom_data, "test"),
            classes=CLASSES,
        )


def weak_tsv(data, path):
    """The weak labels of the train clips (clip-level, from strong)."""
    rows = pd.read_csv(data / "train" / "strong.tsv", sep="\t")
    labels = rows.groupby("filename")["event_label"].apply(
        lambda s: ",".join(sorted(set(s.dropna())))
    )
    path.write_text(
        "filename\tevent_labels\n"
        + "".join(f"{f}\t{lab}\n" for f, lab in labels.items())
    )
    return path


@pytest.mark.parametrize(
    "subsets",
    [("strong",), ("strong", "unlabeled"), ("weak", "unlabeled")],
    ids="+".join,
)
def test_optional_subsets_give_matching_manifests(
    custom_data, tmp_path, subsets
):
    kwargs = {"test_strong": strong(custom_data, "test")}
    if "strong" in subsets:
        kwargs["train_strong"] = strong(custom_data, "train")
    if "weak" in subsets:
        kwargs["train_weak"] = {
            "tsv": weak_tsv(custom_data, tmp_path / "weak.tsv"),
            "audio": custom_data / "train" / "audio",
        }
    if "unlabeled" in subsets:
        kwargs["train_unlabeled"] = custom_data / "unlabeled"
    out = prepare_sed_dataset(
        tmp_path / "prep", classes=CLASSES, progress=False, **kwargs
    )
    expected = {"valid", "test"}
    expected |= {
        {"strong": "train_strong", "weak": "train_weak"}.get(s, s)
        for s in subsets
    }
    assert set(out) == expected
    train = {
        n: json.loads(out[n].read_text())
        for n in ("train_strong", "train_weak")
        if n in out
    }
    valid = json.loads(out["valid"].read_text())
    if "strong" in subsets:
        # 10 % of the 16 strong clips held out, none left in training
        assert len(valid) == 2 and not set(valid) & set(train["train_strong"])
        assert len(train["train_strong"]) == 14
    else:
        # no strong training clips to hold out: the test set validates
        assert valid == json.loads(out["test"].read_text())
    for entries in train.values():
        kinds = {e["kind"] for e in entries.values()}
        assert kinds == ({"strong"} if "train_strong" in train else {"weak"})
    # a second call with the same inputs is a no-op returning the same
    again = prepare_sed_dataset(
        tmp_path / "prep", classes=CLASSES, progress=False, **kwargs
    )
    assert again == out


@pytest.mark.slow
def test_weak_and_unlabeled_atst_recipe_run(custom_data, tmp_path):
    """Weak + unlabeled training (no strong clips), ATST-SED on 5 s clips."""
    row = CUSTOM_ROWS["custom_atst_sed"]
    weak = weak_tsv(custom_data, tmp_path / "weak.tsv")
    audio = custom_data / "train" / "audio"
    flags = row_flags(
        custom_data,
        row=row,
        extra=" --train_strong=null"
        f" '--train_weak={{tsv: {weak}, audio: {audio}}}'"
        " --train_subsets=[train_weak,unlabeled] --selection_key=student_obj"
        " --csebbs_tuning=False --n_event_rolls=0",
    )
    out, _ = run_recipe(row, custom_data, tmp_path, flags)
    assert_row_files(row, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["teacher"]["per_class"]) == CLASSES
    log = (out / "train_log.txt").read_text()
    assert "train strong: 0.00e+00" in log  # no strong rows in any batch
    assert "valid student_weak_f1" not in log  # no weak validation clips


@pytest.fixture(scope="module")
def custom_stage1(custom_data, tmp_path_factory):
    """The custom_atst_sed (stage 1) row, one tiny epoch: its output."""
    row = CUSTOM_ROWS["custom_atst_sed"]
    work = tmp_path_factory.mktemp("custom_stage1")
    flags = row_flags(custom_data, row=row)
    out, _ = run_recipe(row, custom_data, work, flags)
    return out


@pytest.mark.parametrize(
    "name", ["custom_atst_sed_stage2", "custom_atst_sedv2"]
)
@pytest.mark.slow
def test_custom_stage2_recipes_start_from_stage1(
    name, custom_stage1, custom_data, tmp_path
):
    row = CUSTOM_ROWS[name]
    flags = row_flags(custom_data, row=row).replace(
        "tests/tmp/custom_atst_stage1_out", str(custom_stage1)
    )
    flags += " --csebbs_tuning=False --n_event_rolls=0"
    out, _ = run_recipe(row, custom_data, tmp_path, flags)
    assert_row_files(row, out)
    assert (out / "classes.txt").read_text().split() == list(
        CUSTOM_EXAMPLE_CLASSES
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["teacher"]["per_class"]) == CLASSES
    log = (out / "log.txt").read_text()
    assert f"Initialised student and teacher from {custom_stage1}" in log
    if name == "custom_atst_sedv2":
        assert "contrastive" in (out / "train_log.txt").read_text()


def test_one_class_dataset_metrics(custom_data, tmp_path):
    """A single class: oracle scores give PSDS 1, the report keeps it."""
    from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
    from speechbrain_sed_condmix.dataio.prep import load_manifest
    from speechbrain_sed_condmix.metrics import compute_sed_metrics
    from speechbrain_sed_condmix.postprocessing import PostProcessing
    from speechbrain_sed_condmix.scores import ground_truth_scores

    rows = pd.read_csv(custom_data / "test" / "strong.tsv", sep="\t")
    only = rows[rows["event_label"].isin(["chime"]) | rows["onset"].isna()]
    # clips whose every event is another class become clips without events
    empty = sorted(set(rows["filename"]) - set(only["filename"]))
    tsv = tmp_path / "chime.tsv"
    tsv.write_text(
        only.to_csv(sep="\t", index=False)
        + "".join(f"{name}\t\t\t\n" for name in empty)
    )
    out = prepare_sed_dataset(
        tmp_path / "prep",
        train_strong={"tsv": tsv, "audio": custom_data / "test" / "audio"},
        classes=["chime"],
        valid_fraction=0.5,
        progress=False,
    )
    encoder = FrameLabelEncoder(["chime"], audio_duration=5.0)
    scores = ground_truth_scores(load_manifest(out["valid"]), encoder)
    prep = tmp_path / "prep"
    stats = compute_sed_metrics(
        scores, prep / "valid_gt.tsv", prep / "valid_durations.tsv"
    )
    assert list(stats["per_class"]) == ["chime"]
    assert stats["psds1"] > 0.9 and stats["intersection_f1"] == 1.0
    post = PostProcessing(["chime"], median_filter=[5])
    events = post.events(next(iter(scores.values())))
    assert set(events["event_label"]) <= {"chime"}
    with pytest.raises(ValueError, match="2 entries for 1 classes"):
        PostProcessing(["chime"], median_filter=[5, 5])


# ----------------------------------------------------------------------
# Nothing outside the DESED prep names the DESED classes


def test_no_desed_class_names_outside_the_desed_prep():
    import ast

    from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES

    # sed-import reads released DESED models, which carry DESED's classes.
    allowed = {"dataio/desed.py", "dataio/layout.py", "importing.py"}
    package = REPO / "speechbrain_sed_condmix"
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel in allowed or rel.startswith("dataio/synth/"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(
                node,
                (
                    ast.Module,
                    ast.ClassDef,
                    ast.FunctionDef,
                    ast.AsyncFunctionDef,
                ),
            )
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and id(node) not in docstrings:
                if isinstance(node.value, str) and node.value in DESED_CLASSES:
                    found.append(f"{rel}:{node.lineno}: {node.value!r}")
            if isinstance(node, ast.Name) and node.id == "DESED_CLASSES":
                found.append(f"{rel}:{node.lineno}: DESED_CLASSES")
            if isinstance(node, ast.alias) and node.name == "DESED_CLASSES":
                found.append(f"{rel}: imports DESED_CLASSES")
    assert not found, found
    custom = (REPO / "recipes/Custom/SED/hparams/custom_crnn.yaml").read_text()
    # whole words: "SpeechBrain" is not the class "Speech"
    named = [c for c in DESED_CLASSES if re.search(rf"\b{c}\b", custom)]
    assert not named
