"""Model cards of detector folders and the sha256 check of model.ckpt."""

import hashlib

import pytest
import torch
import yaml

from speechbrain_sed_condmix.export import export_detector
from speechbrain_sed_condmix.inference import SoundEventDetector
from speechbrain_sed_condmix.model_folder import (
    ModelFileMismatchError,
    check_yaml_classes,
    sha256_of,
)

SMALL_CRNN = {"cnn_filters": [4, 8, 8, 8, 8, 8, 8], "rnn_hidden": 8}


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
