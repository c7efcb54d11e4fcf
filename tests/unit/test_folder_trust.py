"""Loading a model folder runs no code from it unless trusted.

Two tiny folders, one from ``sed-export`` (an untrained crnn_mt experiment)
and one from ``sed-import`` (a generated DESED_task checkpoint), each get a
payload that creates a marker file when it is built. The card's
``config_sha256`` is updated as well, as anyone who edits the YAML can do:
the allow-list, not the hash, must stop it. ``from_hparams`` and
``sed-detect`` (in process) refuse every one and the marker stays absent;
with the explicit trust option they load, the payload runs (the marker
appears: the payloads are real) and the log names the targets.
"""

import hashlib
import logging
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_sed_condmix.cli import detect_main, export_main
from speechbrain_sed_condmix.export import export_detector
from speechbrain_sed_condmix.folder_check import check_folder
from speechbrain_sed_condmix.importing import import_release
from speechbrain_sed_condmix.inference import SoundEventDetector
from speechbrain_sed_condmix.lobes.crnn import CRNN
from speechbrain_sed_condmix.model_folder import (
    ModelFileMismatchError,
    sha256_of,
)
from speechbrain_sed_condmix.safe_yaml import UntrustedYAMLError

SMALL = {"n_filters": [4, 8, 8, 8, 8, 8, 8], "rnn_hidden": 8}

# (appended YAML with {m} for the marker, key and target named, runs?)
PAYLOADS = {
    "os_system": (
        'payload: !apply:os.system ["touch {m}"]',
        "payload",
        "!apply:os.system",
    ),
    "popen": (
        'payload: !new:subprocess.Popen [[touch, "{m}"]]',
        "payload",
        "!new:subprocess.Popen",
    ),
    "eval": ("payload: !name:builtins.eval", "payload", "!name:builtins.eval"),
    "nested": (
        'notes:\n  a: [1, {{b: [x, {{c: !apply:os.system ["touch {m}"]}}]}}]',
        "notes.a[1].b[1].c",
        "!apply:os.system",
    ),
    "behind_ref": (
        '__hidden: !apply:os.system ["touch {m}"]\nnote: !ref <__hidden>',
        "__hidden",
        "!apply:os.system",
    ),
}
CASES = [(kind, name) for kind in ("exported", "imported") for name in PAYLOADS]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, make_experiment):
    root = tmp_path_factory.mktemp("trust")
    overrides = {"cnn_filters": SMALL["n_filters"], "rnn_hidden": 8}
    experiment, _ = make_experiment(root / "exp", "crnn_mt.yaml", overrides)
    exported = export_detector(experiment, root / "exported")
    state = CRNN(**SMALL).state_dict()
    weights = {
        f"sed_{w}.{k}": v
        for w in ("student", "teacher")
        for k, v in state.items()
    }
    torch.save({"state_dict": weights}, root / "release.ckpt")
    imported = import_release(
        "desed-crnn", root / "release.ckpt", root / "imported"
    )
    return {
        "exported": exported,
        "imported": imported,
        "experiment": experiment,
    }


def _plant(folder, payload, dest, update_card=True):
    """A copy of ``folder`` with ``payload`` appended to its YAML."""
    shutil.copytree(folder, dest)
    path = dest / "hyperparams.yaml"
    old = sha256_of(path)
    path.write_text(path.read_text() + payload + "\n")
    if update_card:
        card = dest / "README.md"
        new = hashlib.sha256(path.read_bytes()).hexdigest()
        card.write_text(card.read_text().replace(old, new))
    return dest


def _load(folder, tmp_path, **kwargs):
    return SoundEventDetector.from_hparams(
        source=str(folder), savedir=tmp_path / "sd", **kwargs
    )


@pytest.mark.parametrize("kind, name", CASES)
def test_payload_is_refused_and_never_runs(
    folders, kind, name, tmp_path, capsys
):
    template, key, target = PAYLOADS[name]
    marker = tmp_path / "MARKER"
    bad = _plant(folders[kind], template.format(m=marker), tmp_path / "bad")
    with pytest.raises(UntrustedYAMLError) as caught:
        _load(bad, tmp_path)
    message = str(caught.value)
    assert str(bad / "hyperparams.yaml") in message
    assert f"key '{key}'" in message and target in message
    assert "trust_remote_code=True" in message
    code = detect_main(
        ["x.wav", "--model", str(bad), "--out", str(tmp_path / "e.tsv")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"key '{key}'" in err and target in err
    assert "--trust-remote-code" in err
    assert not marker.exists()
    assert not (tmp_path / "e.tsv").exists()


@pytest.mark.parametrize("kind, name", CASES)
def test_trusted_payload_loads_and_the_log_names_it(
    folders, kind, name, tmp_path, caplog
):
    template, key, target = PAYLOADS[name]
    marker = tmp_path / "MARKER"
    bad = _plant(folders[kind], template.format(m=marker), tmp_path / "bad")
    with caplog.at_level(logging.WARNING):
        detector = _load(bad, tmp_path, trust_remote_code=True)
    assert detector.classes
    log = caplog.text
    assert "trust_remote_code=True" in log
    assert f"key '{key}'" in log and target in log
    if name == "popen":
        detector.hparams.payload.wait()
    assert marker.exists() == (name != "eval")


def test_sed_detect_with_trust_runs_the_folder(folders, tmp_path, caplog):
    marker = tmp_path / "MARKER"
    template = PAYLOADS["os_system"][0]
    bad = _plant(
        folders["exported"], template.format(m=marker), tmp_path / "bad"
    )
    wav = tmp_path / "a.wav"
    sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(16000), 16000)
    out = tmp_path / "events.tsv"
    argv = [str(wav), "--model", str(bad), "--out", str(out), "--quiet"]
    with caplog.at_level(logging.WARNING):
        assert detect_main([*argv, "--trust-remote-code"]) == 0
    assert out.is_file() and marker.exists()
    assert "!apply:os.system" in caplog.text


@pytest.mark.parametrize("kind", ["exported", "imported"])
def test_written_folders_load_without_the_option(
    folders, kind, tmp_path, caplog
):
    assert check_folder(folders[kind]) == []
    with caplog.at_level(logging.WARNING):
        detector = _load(folders[kind], tmp_path)
    assert len(detector.classes) == 10
    assert "trust_remote_code" not in caplog.text
    assert "no model card" not in caplog.text


@pytest.mark.parametrize("kind", ["exported", "imported"])
@pytest.mark.parametrize("edit", ["invalid_yaml", "payload"])
def test_edit_after_export_stops_at_the_hash_check(
    folders, kind, edit, tmp_path, capsys
):
    marker = tmp_path / "MARKER"
    payload = {
        "invalid_yaml": "broken: [1, {",
        "payload": f'payload: !apply:os.system ["touch {marker}"]',
    }[edit]
    expected = sha256_of(folders[kind] / "hyperparams.yaml")
    bad = _plant(folders[kind], payload, tmp_path / "bad", update_card=False)
    found = sha256_of(bad / "hyperparams.yaml")
    with pytest.raises(ModelFileMismatchError) as caught:
        _load(bad, tmp_path)
    message = str(caught.value)
    # The hash error, not a YAML or allow-list error: it came first.
    assert message.startswith(f"{bad / 'hyperparams.yaml'}: sha256 {found}")
    assert f"differs from {expected} recorded in {bad / 'README.md'}" in message
    assert detect_main(["x.wav", "--model", str(bad)]) == 2
    assert re.search(
        f"hyperparams.yaml: sha256 {found}", capsys.readouterr().err
    )
    assert not marker.exists()


def test_folder_without_a_card_warns_and_is_still_checked(
    folders, tmp_path, caplog
):
    plain = tmp_path / "plain"
    shutil.copytree(folders["exported"], plain)
    (plain / "README.md").unlink()
    with caplog.at_level(logging.WARNING):
        assert _load(plain, tmp_path / "first").classes
    assert "has no model card" in caplog.text
    marker = tmp_path / "MARKER"
    payload = f'p: !apply:os.system ["touch {marker}"]'
    bad = _plant(plain, payload, tmp_path / "b", update_card=False)
    with pytest.raises(UntrustedYAMLError, match="key 'p'"):
        _load(bad, tmp_path)
    assert not marker.exists()


def test_the_file_checked_is_the_file_loaded(folders, tmp_path):
    """SpeechBrain reads a hyperparams.yaml already in savedir, not the
    source's: that is the one checked."""
    marker = tmp_path / "MARKER"
    savedir = tmp_path / "sd"
    savedir.mkdir()
    text = (folders["exported"] / "hyperparams.yaml").read_text()
    payload = f'payload: !apply:os.system ["touch {marker}"]\n'
    (savedir / "hyperparams.yaml").write_text(text + payload)
    with pytest.raises(ModelFileMismatchError, match="sd/hyperparams.yaml"):
        _load(folders["exported"], tmp_path)
    # A source without a card: the allow-list stops it.
    source = tmp_path / "nocard"
    shutil.copytree(folders["exported"], source)
    (source / "README.md").unlink()
    (savedir / "README.md").unlink()
    with pytest.raises(UntrustedYAMLError, match="sd/hyperparams.yaml"):
        _load(source, tmp_path)
    assert not marker.exists()
    # It is the file the load reads: trusted, its payload runs.
    _load(source, tmp_path, trust_remote_code=True)
    assert marker.exists()


def test_sed_export_checks_what_it_builds_from_an_experiment(
    folders, tmp_path, capsys
):
    marker = tmp_path / "MARKER"
    experiment = tmp_path / "exp"
    shutil.copytree(folders["experiment"], experiment)
    path = experiment / "hyperparams.yaml"
    text = path.read_text()
    payload = f'\n  extra: !apply:os.system ["touch {marker}"]'
    head, sep, tail = text.partition("\nencoder: ")
    line_end = tail.index("\n")
    path.write_text(head + sep + tail[:line_end] + payload + tail[line_end:])
    out = tmp_path / "out"
    assert export_main([str(experiment), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "key 'encoder.extra'" in err
    assert "!apply:os.system" in err
    assert not marker.exists() and not out.exists()


def test_another_hparams_file_is_checked_too(folders, tmp_path):
    marker = tmp_path / "MARKER"
    folder = tmp_path / "m"
    shutil.copytree(folders["exported"], folder)
    text = (folder / "hyperparams.yaml").read_text()
    payload = f'payload: !apply:os.system ["touch {marker}"]\n'
    (folder / "other.yaml").write_text(text + payload)
    with pytest.raises(UntrustedYAMLError, match="other.yaml names key"):
        _load(folder, tmp_path, hparams_file="other.yaml")
    assert not marker.exists()
