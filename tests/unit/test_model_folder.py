"""Model cards of detector folders and the sha256 check of model.ckpt."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from speechbrain_sed_condmix.export import export_detector
from speechbrain_sed_condmix.inference import SoundEventDetector
from speechbrain_sed_condmix.model_folder import (
    ModelFileMismatchError,
    check_yaml_classes,
    sha256_of,
    yaml_parser,
)

SMALL_CRNN = {"cnn_filters": [4, 8, 8, 8, 8, 8, 8], "rnn_hidden": 8}
CUSTOM_CRNN = (
    Path(__file__).resolve().parents[2]
    / "recipes/Custom/SED/hparams/custom_crnn.yaml"
)
#: Not sorted: the output order is the file's.
CUSTOM_CLASSES = ["whistle", "bark", "chime"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, make_experiment):
    root = tmp_path_factory.mktemp("card")
    folder, hparams = make_experiment(root / "exp", "crnn_mt.yaml", SMALL_CRNN)
    (folder / "metrics.json").write_text(
        '{"teacher": {"psds1": 0.123456, "psds2": 0.5}, "loss": 1.0}'
    )
    return folder, hparams


def _front_matter(card):
    text = card.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text[4 : text.index("\n---", 4)]), text


def test_export_writes_a_model_card(experiment, tmp_path):
    folder, hparams = experiment
    out = export_detector(folder, tmp_path / "m", license="CC-BY-4.0")
    meta, text = _front_matter(out / "README.md")
    assert meta["model_sha256"] == sha256_of(out / "model.ckpt")
    assert meta["license"] == "CC-BY-4.0"
    config = (out / "hyperparams.yaml").read_bytes()

    assert meta["config_sha256"] == hashlib.sha256(config).hexdigest()
    for index, name in enumerate(hparams["encoder"].classes):
        assert f"\n{index}. {name}\n" in text
    assert "median filter: 7 frames for every class" in text
    assert "CNNMelFrontEnd(" in text and "n_fft=2048" in text
    assert "psds1 (teacher, test set): 0.1235" in text
    assert f"sed-detect recording.wav --model {out}" in text
    assert "package_version: 0.1.0" in text


def test_from_hparams_checks_the_sha256(experiment, tmp_path):
    folder, _ = experiment
    out = export_detector(folder, tmp_path / "m")
    detector = SoundEventDetector.from_hparams(
        source=str(out), savedir=tmp_path / "a"
    )
    assert detector.classes
    # Tamper with the weights: the load stops before reading them.
    state = torch.load(out / "model.ckpt", weights_only=True)
    state["dense.bias"] += 1.0
    torch.save(state, out / "model.ckpt")
    with pytest.raises(ModelFileMismatchError, match="model.ckpt: sha256"):
        SoundEventDetector.from_hparams(source=str(out), savedir=tmp_path / "b")
    # Without a card there is nothing to check against: it loads.
    (out / "README.md").unlink()
    detector = SoundEventDetector.from_hparams(
        source=str(out), savedir=tmp_path / "c"
    )
    assert float(detector.mods.model.dense.bias[0]) == pytest.approx(
        float(state["dense.bias"][0])
    )


def test_written_yaml_uses_only_package_and_speechbrain_classes(
    experiment, tmp_path
):
    folder, _ = experiment
    out = export_detector(folder, tmp_path / "m")
    check_yaml_classes((out / "hyperparams.yaml").read_text())
    with pytest.raises(ValueError, match=r"key 'b' \(line 2\): !new:os.Foo"):
        check_yaml_classes("a: 1\nb: !new:os.Foo\n")


@pytest.mark.parametrize("run_record", [False, True])
def test_custom_data_export_loads_without_the_classes_file(
    tmp_path, make_experiment, run_record
):
    """The custom recipes read their classes from an absolute classes.txt;
    the exported folder holds the list and the count, so it loads and
    detects after that file is gone."""
    from speechbrain_sed_condmix.postprocessing import PostProcessing

    data = tmp_path / "data"
    data.mkdir()
    classes_file = data / "classes.txt"
    classes_file.write_text("# mine\n" + "\n".join(CUSTOM_CLASSES) + "\n")
    folder, hparams = make_experiment(
        tmp_path / "exp", CUSTOM_CRNN, {**SMALL_CRNN, "data_folder": str(data)}
    )
    resolved = (folder / "hyperparams.yaml").read_text()
    # What the bug kept: a call that reads this absolute path.
    assert "load_classes" in resolved and str(classes_file) in resolved
    assert hparams["encoder"].classes == CUSTOM_CLASSES
    if run_record:
        # train.py's own record; the data folder is gone before export.
        shutil.copy(classes_file, folder / "classes.txt")
        classes_file.unlink()
    # Threshold 0: every class is detected, so the names are checked.
    out = export_detector(
        folder,
        tmp_path / "m",
        postprocessing=PostProcessing(CUSTOM_CLASSES, threshold=0.0),
    )
    if classes_file.exists():
        classes_file.rename(tmp_path / "moved.txt")
    (folder / "classes.txt").unlink(missing_ok=True)
    text = (out / "hyperparams.yaml").read_text()
    assert "load_classes" not in text and "classes.txt" not in text
    written = yaml_parser().load(text)
    assert written["model"]["n_class"] == len(CUSTOM_CLASSES)
    assert list(written["encoder"]["classes"]) == CUSTOM_CLASSES

    detector = SoundEventDetector.from_hparams(
        source=str(out), savedir=tmp_path / "s"
    )
    assert detector.classes == CUSTOM_CLASSES
    assert detector.mods.model.dense.out_features == len(CUSTOM_CLASSES)
    rate = hparams["sample_rate"]
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 5 * rate)
    sf.write(tmp_path / "clip.wav", noise, rate)
    events = detector.detect_file(tmp_path / "clip.wav")
    assert set(events["event_label"]) == set(CUSTOM_CLASSES)
    # The exported weights are the teacher's, unchanged.
    teacher = hparams["teacher"].model.state_dict()
    for key, value in detector.mods.model.state_dict().items():
        assert torch.equal(value, teacher[key]), key
    # Neither the run's record nor the YAML's file: a clear stop.
    with pytest.raises(FileNotFoundError, match="restore one of them"):
        export_detector(folder, tmp_path / "m2")


def test_folder_of_an_older_export_still_loads(experiment, tmp_path):
    """Folders exported before the class list was written out call
    load_classes on an absolute path: they load while that file exists."""
    folder, hparams = experiment
    out = export_detector(folder, tmp_path / "m")
    classes = list(hparams["encoder"].classes)
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("\n".join(classes) + "\n")
    text = (out / "hyperparams.yaml").read_text()
    new = f"\n  n_class: {len(classes)}\n"
    assert text.count(new) == 1
    old = (
        "\n  n_class: !apply:len\n"
        "  - !apply:speechbrain_sed_condmix.dataio.custom.load_classes\n"
        f"    classes_file: {classes_file}\n"
    )
    (out / "hyperparams.yaml").write_text(text.replace(new, old))
    (out / "README.md").unlink()  # its config_sha256 was of the new text
    detector = SoundEventDetector.from_hparams(
        source=str(out), savedir=tmp_path / "a"
    )
    assert detector.classes == classes
    assert detector.mods.model.dense.out_features == len(classes)
    classes_file.unlink()
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        SoundEventDetector.from_hparams(source=str(out), savedir=tmp_path / "b")
