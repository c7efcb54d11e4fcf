"""Loading a checkpoint never runs code from it (issue 19).

The checkpoints are built in the documented layouts: DESED_task's CRNN
Lightning checkpoint (``shared/reference/desed_task.md`` §12), the
fine-tuned ATST-Frame checkpoint and ATST-SED's stage-1 and stage-2
Lightning checkpoints (``atst_sed.md`` §2a.4, §2b), each with the entries
that Lightning adds next to the weights.
"""

import argparse
import logging
import os
import pathlib
import shlex
import sys
import types

import numpy as np
import pytest
import torch

from speechbrain_sed_condmix.lobes.atst import (
    ATSTFrame,
    load_atst_checkpoint,
)
from speechbrain_sed_condmix.lobes.atst_sed import ATSTSED
from speechbrain_sed_condmix.lobes.crnn import (
    CRNN,
    load_desed_task_state_dict,
)
from speechbrain_sed_condmix.pretrained import load_pretrained
from speechbrain_sed_condmix.resilience import TrainingState
from speechbrain_sed_condmix.safe_load import (
    SAFE_GLOBAL_NAMES,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
)
from speechbrain_sed_condmix.teacher import EMATeacher

LAYOUTS = ["desed_crnn", "atst_frame", "atst_sed_stage1", "atst_sed_stage2"]
ATST_LAYOUTS = ["atst_frame", "atst_sed_stage1", "atst_sed_stage2"]
ATTRIBUTE_DICT = "pytorch_lightning.utilities.parsing.AttributeDict"


class RunsCommand:
    """What an attacker puts in a checkpoint: unpickling runs a command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class AttributeDict(dict):
    """Lightning's ``AttributeDict`` (Lightning itself is not installed)."""

    def __getattr__(self, key):
        return self[key]


@pytest.fixture
def lightning_module(monkeypatch):
    """Make :class:`AttributeDict` picklable under Lightning's module name.

    Only while saving: loading must not need (or import) Lightning.
    """
    module_name, _, class_name = ATTRIBUTE_DICT.rpartition(".")
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    setattr(sys.modules[module_name], class_name, AttributeDict)
    monkeypatch.setattr(AttributeDict, "__module__", module_name)
    yield
    monkeypatch.undo()


def small_crnn(seed):
    torch.manual_seed(seed)
    return CRNN(n_filters=[4], pooling=[(2, 16)], rnn_hidden=3, n_freq=16)


def small_atst(seed):
    torch.manual_seed(seed)
    return ATSTFrame(embed_dim=8, depth=1, num_heads=2, max_tokens=4)


def small_atst_sed(seed):
    return ATSTSED(
        small_atst(seed),
        n_filters=[4, 4, 4, 4, 4, 4, 4],
        rnn_hidden=4,
        fusion_size=8,
    )


def layout_weights(layout, seed=0):
    """``(checkpoint entries, the model whose weights they hold)``.

    The model is the one the package's loaders fill from the layout: the
    CRNN teacher for DESED_task, the ATST-Frame encoder otherwise.
    """
    if layout == "desed_crnn":
        student, teacher = small_crnn(seed), small_crnn(seed + 1)
        state = {f"sed_student.{k}": v for k, v in student.state_dict().items()}
        state.update(
            {f"sed_teacher.{k}": v for k, v in teacher.state_dict().items()}
        )
        # The reference's mel front end buffers sit in the same dict.
        state["mel_spec.spectrogram.window"] = torch.hamming_window(2048)
        return {"state_dict": state}, teacher
    if layout == "atst_frame":
        encoder = small_atst(seed)
        state = {
            f"encoder.encoder.{k}": v for k, v in encoder.state_dict().items()
        }
        state["head.linear.weight"] = torch.zeros(527, 8)
        state["head.linear.bias"] = torch.zeros(527)
        state["head.norm.running_mean"] = torch.zeros(8)
        return {"state_dict": state}, encoder
    # ATST-SED, both stages: Lightning's state dict plus the top-level
    # student and teacher dicts written by on_save_checkpoint.
    student, teacher = small_atst_sed(seed), small_atst_sed(seed + 1)
    entries = {"state_dict": {}}
    for name, model in (("sed_student", student), ("sed_teacher", teacher)):
        own = model.state_dict()
        entries["state_dict"].update({f"{name}.{k}": v for k, v in own.items()})
        entries[name] = dict(own)
    return entries, student.atst_frame.atst


def lightning_checkpoint(entries, hyper_parameters):
    """A checkpoint with the entries Lightning (1.9) writes."""
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.9)
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    monitor = "val/obj_metric"
    return {
        "epoch": 12,
        "global_step": 3456,
        "pytorch-lightning_version": "1.9.5",
        **entries,
        "loops": {
            "fit_loop": {
                "state_dict": {},
                "epoch_progress": {"total": {"ready": 13, "completed": 12}},
            }
        },
        "callbacks": {
            f"ModelCheckpoint{{'monitor': '{monitor}', 'mode': 'max'}}": {
                "monitor": monitor,
                "best_model_score": torch.tensor(0.51),
                "best_model_path": "exp/epoch=11.ckpt",
                "current_score": torch.tensor(0.49),
                "dirpath": "exp",
                "best_k_models": {"exp/epoch=11.ckpt": torch.tensor(0.51)},
                "kth_best_model_path": "exp/epoch=11.ckpt",
                "kth_value": torch.tensor(0.51),
                "last_model_path": "exp/last.ckpt",
            },
            f"EarlyStopping{{'monitor': '{monitor}', 'mode': 'max'}}": {
                "wait_count": 3,
                "stopped_epoch": 0,
                "best_score": torch.tensor(0.51),
                "patience": 200,
            },
        },
        "optimizer_states": [optimizer.state_dict()],
        # DESED_task's ExponentialWarmup state and a torch scheduler's.
        "lr_schedulers": [
            {"max_lr": 1e-3, "rampup_length": 50, "step_num": 3456},
            scheduler.state_dict(),
        ],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }


def hparams_values():
    """Plain values as found in the reference YAMLs, plus a path, NumPy
    scalars and an array that hyper-parameters of other runs hold."""
    return {
        "training": {"batch_size": [12, 6, 6, 24], "ema_factor": 0.999},
        "net": {"nb_filters": [16, 32, 64, 128, 128, 128, 128]},
        "log_dir": pathlib.PurePosixPath("./exp/2023_baseline"),
        "threshold": np.float64(0.5),
        "n_epochs": np.int64(200),
        "median_window": np.array([7, 7, 7], dtype=np.int32),
    }


def assert_values_equal(got, expected):
    assert type(got) is type(expected) or (
        isinstance(expected, dict) and type(got) is dict
    ), (type(got), type(expected))
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            assert_values_equal(got[key], expected[key])
    elif isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    else:
        assert got == expected


def evil_checkpoint(layout, path, marker):
    entries, _ = layout_weights(layout)
    hparams = {"lr": 1e-3, "cfg": RunsCommand(f"touch {shlex.quote(marker)}")}
    torch.save(lightning_checkpoint(entries, hparams), path)
    return path


# ----------------------------------------------------------------------
# Malicious checkpoints: refused, naming the file and the global, and
# nothing runs.


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_loader_refuses_a_malicious_checkpoint(layout, tmp_path):
    marker = tmp_path / "pwned"
    path = evil_checkpoint(layout, tmp_path / "evil.ckpt", str(marker))
    loaders = [load_checkpoint]
    if layout == "desed_crnn":
        loaders.append(
            lambda p: load_desed_task_state_dict(
                small_crnn(5), p, which="teacher"
            )
        )
    else:
        loaders.append(lambda p: load_atst_checkpoint(small_atst(5), p))
    if layout == "atst_frame":
        student = small_atst_sed(5)
        loaders.append(
            lambda p: load_pretrained(student, EMATeacher(student), atst_ckpt=p)
        )
    for loader in loaders:
        with pytest.raises(UnsafeCheckpointError) as err:
            loader(path)
        message = str(err.value)
        assert str(path) in message
        assert "posix.system" in message
        assert "trust_checkpoint=True" in message
        assert err.value.globals == ("posix.system",)
        assert not marker.exists()


def test_the_malicious_checkpoint_does_run_code_when_unpickled(tmp_path):
    """The attack is real: plain unpickling runs it (guards the test)."""
    marker = tmp_path / "pwned"
    path = evil_checkpoint("desed_crnn", tmp_path / "e.ckpt", str(marker))
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_legacy_format_malicious_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.ckpt"
    torch.save(
        {"x": RunsCommand(f"touch {shlex.quote(str(marker))}")},
        path,
        _use_new_zipfile_serialization=False,
    )
    with pytest.raises(UnsafeCheckpointError, match="posix.system") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_stage1_folder_with_a_malicious_student_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "stage1" / "save" / "CKPT+1"
    ckpt.mkdir(parents=True)
    trained = small_atst_sed(1)
    evil = {**trained.state_dict(), "x": RunsCommand(f"touch {marker}")}
    torch.save(evil, ckpt / "student.ckpt")
    torch.save(EMATeacher(trained).state_dict(), ckpt / "teacher.ckpt")
    student = small_atst_sed(2)
    with pytest.raises(UnsafeCheckpointError, match="student.ckpt"):
        load_pretrained(student, EMATeacher(student), stage1_ckpt=ckpt)
    assert not marker.exists()


def test_malicious_training_state_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "training_state.ckpt"
    TrainingState().save(path)
    state = torch.load(path, weights_only=False)
    state["bad_audio"] = [RunsCommand(f"touch {marker}")]
    torch.save(state, path)
    with pytest.raises(UnsafeCheckpointError, match="training_state.ckpt"):
        TrainingState().load(path, end_of_epoch=True)
    assert not marker.exists()


# ----------------------------------------------------------------------
# Real layouts load without the opt-in, values intact.


def hyper_parameter_variants():
    values = hparams_values()
    nested = {**values, "training": AttributeDict(values["training"])}
    return {
        "dict": (nested, values),
        "namespace": (
            argparse.Namespace(**values),
            argparse.Namespace(**values),
        ),
        # Lightning before 1.0 stored the AttributeDict itself.
        "attribute_dict": (AttributeDict(values), values),
    }


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", ["dict", "namespace", "attribute_dict"])
def test_real_layouts_load_without_opt_in(
    layout, variant, tmp_path, lightning_module
):
    saved_hparams, expected_hparams = hyper_parameter_variants()[variant]
    entries, source = layout_weights(layout)
    ckpt = lightning_checkpoint(entries, saved_hparams)
    path = tmp_path / f"{layout}.ckpt"
    torch.save(ckpt, path)
    lightning_module_names = [m for m in sys.modules if "lightning" in m]
    for name in lightning_module_names:  # loading must not need them
        sys.modules.pop(name)

    loaded = load_checkpoint(path)
    assert set(loaded) == set(ckpt)
    if variant == "namespace":
        assert isinstance(loaded["hyper_parameters"], argparse.Namespace)
        assert_values_equal(
            vars(loaded["hyper_parameters"]), vars(expected_hparams)
        )
    else:
        assert_values_equal(loaded["hyper_parameters"], expected_hparams)
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        assert loaded[key] == ckpt[key]
    saved_opt, got_opt = (
        ckpt["optimizer_states"][0],
        loaded["optimizer_states"][0],
    )
    assert got_opt["param_groups"] == saved_opt["param_groups"]
    for index, state in saved_opt["state"].items():
        for name, value in state.items():
            assert torch.equal(got_opt["state"][index][name], value)
    assert loaded["lr_schedulers"] == ckpt["lr_schedulers"]
    for name, state in ckpt["callbacks"].items():
        for key, value in state.items():
            got = loaded["callbacks"][name][key]
            assert (
                torch.equal(got, value)
                if isinstance(value, torch.Tensor)
                else got == value
            )

    # The package's loaders take the weights from the same file.
    if layout == "desed_crnn":
        target = load_desed_task_state_dict(small_crnn(9), path, "teacher")
    else:
        target = small_atst(9)
        assert load_atst_checkpoint(target, path) == 17
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_training_state_round_trip_without_opt_in(tmp_path):
    """The package's own intra-epoch state (NumPy and Python generator
    states) needs no opt-in."""
    path = tmp_path / "state.ckpt"
    TrainingState().save(path)
    numpy_draw = np.random.rand(3)
    python_draw = [np.random.randint(10**6) for _ in range(3)]
    state = TrainingState()
    state.load(path, end_of_epoch=True)
    np.testing.assert_array_equal(np.random.rand(3), numpy_draw)
    assert [np.random.randint(10**6) for _ in range(3)] == python_draw


class WindowsPathFromElsewhere:
    """Pickles as the ``pathlib.WindowsPath`` a Windows run would write."""

    def __reduce__(self):
        return (pathlib.WindowsPath, ("C:\\data", "exp"))


def test_paths_load_and_foreign_ones_become_pure(tmp_path):
    path = tmp_path / "p.ckpt"
    torch.save(
        {"here": pathlib.Path("a/b"), "win": WindowsPathFromElsewhere()}, path
    )
    loaded = load_checkpoint(path)
    assert type(loaded["here"]) is type(pathlib.Path("a/b"))
    assert loaded["here"] == pathlib.Path("a/b")
    if os.name != "nt":
        assert type(loaded["win"]) is pathlib.PureWindowsPath
    assert loaded["win"] == pathlib.PureWindowsPath("C:\\data", "exp")


def test_numpy_object_arrays_are_refused(tmp_path):
    path = tmp_path / "o.ckpt"
    torch.save({"x": np.array([{"a": 1}], dtype=object)}, path)
    with pytest.raises(UnsafeCheckpointError, match="ObjectDType") as err:
        load_checkpoint(path)
    assert err.value.globals == ("numpy.dtypes.ObjectDType",)


def test_allow_list_does_not_leak_into_torch(tmp_path, lightning_module):
    path = tmp_path / "ns.ckpt"
    torch.save({"h": argparse.Namespace(a=1)}, path)
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        before = set(torch.serialization.get_safe_globals())
        load_checkpoint(path)
        # The user's own entry survives; ours are gone again.
        assert set(torch.serialization.get_safe_globals()) == before
    finally:
        torch.serialization.clear_safe_globals()
    attr = tmp_path / "attr.ckpt"
    torch.save({"h": AttributeDict(a=1)}, attr)
    with pytest.raises(Exception, match="AttributeDict"):
        torch.load(attr, weights_only=True)
    assert ATTRIBUTE_DICT in SAFE_GLOBAL_NAMES


# ----------------------------------------------------------------------
# The explicit opt-in


def harmless_unknown_global_checkpoint(path):
    """A DESED_task checkpoint whose hyper-parameters hold a type that the
    allow-list does not have (a date): refused unless trusted."""
    import datetime

    entries, source = layout_weights("desed_crnn")
    hparams = {"created": datetime.date(2023, 5, 1)}
    torch.save(lightning_checkpoint(entries, hparams), path)
    return source


def test_opt_in_loads_a_trusted_file_and_logs_it(tmp_path, caplog):
    path = tmp_path / "trusted.ckpt"
    source = harmless_unknown_global_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_desed_task_state_dict(small_crnn(9), path, which="teacher")
    assert err.value.globals == ("datetime.date",)
    assert "trust_checkpoint=True" in str(err.value)

    with caplog.at_level(logging.WARNING):
        model = load_desed_task_state_dict(
            small_crnn(9), path, which="teacher", trust_checkpoint=True
        )
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert "trust_checkpoint=True" in warnings[0].getMessage()


def test_opt_in_reaches_the_atst_loaders(tmp_path, caplog):
    import datetime

    entries, source = layout_weights("atst_frame")
    path = tmp_path / "atst.ckpt"
    hparams = {"created": datetime.date(2023, 5, 1)}
    torch.save(lightning_checkpoint(entries, hparams), path)
    student = small_atst_sed(4)
    teacher = EMATeacher(student)
    with pytest.raises(UnsafeCheckpointError, match="datetime.date"):
        load_pretrained(student, teacher, atst_ckpt=path)
    with caplog.at_level(logging.WARNING):
        load_pretrained(student, teacher, atst_ckpt=path, trust_checkpoint=True)
    assert any(
        "trust_checkpoint=True" in r.getMessage() for r in caplog.records
    )
    for model in (student, teacher.model):
        for key, value in source.state_dict().items():
            assert torch.equal(model.atst_frame.atst.state_dict()[key], value)


def test_a_caller_can_name_its_own_opt_in(tmp_path):
    path = tmp_path / "c.ckpt"
    harmless_unknown_global_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        load_checkpoint(path, opt_in="--trust-checkpoint")


# ----------------------------------------------------------------------
# Unreadable files


def test_truncated_and_foreign_files_name_the_file(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.ones(100)}, good)
    data = good.read_bytes()
    legacy = tmp_path / "legacy.ckpt"
    torch.save(
        {"w": torch.ones(100)}, legacy, _use_new_zipfile_serialization=False
    )
    old_format = legacy.read_bytes()
    cases = {
        "truncated.ckpt": data[: len(data) // 2],
        "truncated_legacy.ckpt": old_format[: len(old_format) // 2],
        "cut_legacy_header.ckpt": old_format[:30],
        "empty.ckpt": b"",
        "notes.ckpt": b"not a checkpoint\n" * 8,
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        for trust in (False, True):
            with pytest.raises(CorruptCheckpointError) as err:
                load_checkpoint(path, trust_checkpoint=trust)
            assert str(path) in str(err.value)
            assert "truncated, or not written by torch.save" in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")


# ----------------------------------------------------------------------
# Model files: sed-export reads an experiment, SoundEventDetector a folder


@pytest.fixture(scope="module")
def crnn_export(tmp_path_factory, make_experiment):
    from speechbrain_sed_condmix.inference import export_detector

    root = tmp_path_factory.mktemp("export")
    experiment, _ = make_experiment(root / "exp", "crnn_mt.yaml", {})
    return experiment, export_detector(experiment, root / "exported")


def test_export_refuses_a_malicious_experiment_checkpoint(
    crnn_export, tmp_path
):
    import shutil

    from speechbrain_sed_condmix.inference import export_detector

    experiment = tmp_path / "exp"
    shutil.copytree(crnn_export[0], experiment)
    marker = tmp_path / "pwned"
    teacher = experiment / "save" / "CKPT+untrained" / "teacher.ckpt"
    state = torch.load(teacher, weights_only=True)
    state["x"] = RunsCommand(f"touch {shlex.quote(str(marker))}")
    torch.save(state, teacher)
    with pytest.raises(UnsafeCheckpointError, match="teacher.ckpt"):
        export_detector(experiment, tmp_path / "out")
    assert not marker.exists()


def test_detector_folder_with_a_malicious_model_file_runs_nothing(
    crnn_export, tmp_path
):
    """SpeechBrain's Pretrainer reads ``model.ckpt`` with ``torch.load``'s
    default, weights-only since torch 2.6 (the pinned torch is newer)."""
    import pickle
    import shutil

    from speechbrain_sed_condmix.inference import SoundEventDetector
    from speechbrain_sed_condmix.model_folder import (
        CARD_FILE,
        ModelFileMismatchError,
    )

    folder = tmp_path / "model"
    shutil.copytree(crnn_export[1], folder)
    marker = tmp_path / "pwned"
    state = load_checkpoint(folder / "model.ckpt")
    state["x"] = RunsCommand(f"touch {shlex.quote(str(marker))}")
    torch.save(state, folder / "model.ckpt")
    # The model card's sha256 stops the changed file before any load.
    with pytest.raises(ModelFileMismatchError, match="sha256"):
        SoundEventDetector.from_hparams(
            source=str(folder), savedir=str(tmp_path / "sd")
        )
    assert not marker.exists()
    # Without a card (a folder written by hand), the weights-only load
    # refuses the pickled object.
    (folder / CARD_FILE).unlink()
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        SoundEventDetector.from_hparams(
            source=str(folder), savedir=str(tmp_path / "sd2")
        )
    assert not marker.exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sed_import_refuses_a_malicious_release_file(layout, tmp_path):
    from speechbrain_sed_condmix.importing import (
        ReleaseCheckpointError,
        read_checkpoint,
    )

    marker = tmp_path / "pwned"
    path = evil_checkpoint(layout, tmp_path / "evil.ckpt", str(marker))
    with pytest.raises(ReleaseCheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert str(path) in message
    assert "posix.system" in message
    assert "--trust-checkpoint" in message
    assert not marker.exists()
    # The same file in the real layout without the payload loads as is.
    entries, _ = layout_weights(layout)
    clean = tmp_path / "clean.ckpt"
    torch.save(lightning_checkpoint(entries, {"lr": 1e-3}), clean)
    state = read_checkpoint(clean)
    assert state["state_dict"].keys() == entries["state_dict"].keys()
    assert state["hyper_parameters"] == {"lr": 1e-3}
