"""SEDTrainLogger's W&B wiring and its message for a missing extra.

wandb is an optional extra that the test environment does not install: a
stand-in module records what the logger asks of ``wandb.init`` and the run.
"""

import sys
import types

import pytest

from speechbrain_sed_condmix.dashboard import SEDTrainLogger


class FakeRun:
    def __init__(self):
        self.records = []

    def log(self, record, step=None):
        self.records.append((record, step))


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.calls = []

    def init(**kwargs):
        module.calls.append(kwargs)
        module.run = FakeRun()
        return module.run

    module.init = init
    module.Image = lambda path: ("image", path)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_runs_offline_in_the_dashboard_folder(fake_wandb, tmp_path):
    log = SEDTrainLogger(
        tmp_path / "train_log.txt", "wandb", save_dir=tmp_path / "dashboard"
    )
    (options,) = fake_wandb.calls
    assert options["mode"] == "offline"
    assert options["dir"] == str(tmp_path / "dashboard")
    assert (tmp_path / "dashboard").is_dir()
    log.log_stats(
        {"epoch": 3, "lr_cnn": 0.5},
        train_stats={"loss": 0.25},
        valid_stats={"teacher_psds1": 0.125},
        verbose=False,
    )
    record, step = fake_wandb.run.records[0]
    assert step == 3
    assert record == {
        "train": {"loss": 0.25},
        "valid": {"teacher_psds1": 0.125},
        "epoch": 3,
        "lr_cnn": 0.5,
    }
    assert "train loss: 2.50e-01" in (tmp_path / "train_log.txt").read_text()
    png = tmp_path / "roc.png"
    log.log_images({"psd_roc/teacher_psds1": png}, step=3)
    assert fake_wandb.run.records[1] == (
        {"psd_roc/teacher_psds1": ("image", str(png))},
        None,
    )


def test_wandb_options_override_the_defaults(fake_wandb, tmp_path):
    SEDTrainLogger(
        tmp_path / "log.txt",
        "wandb",
        save_dir=tmp_path,
        wandb_options={"mode": "online", "entity": "lab"},
    )
    (options,) = fake_wandb.calls
    assert (options["mode"], options["entity"]) == ("online", "lab")


@pytest.mark.parametrize("dashboard", ["tensorboard", "wandb"])
def test_missing_extra_says_how_to_install_it(dashboard, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, dashboard, None)  # import fails
    with pytest.raises(ImportError) as error:
        SEDTrainLogger(tmp_path / "log.txt", dashboard, save_dir=tmp_path)
    message = str(error.value)
    assert f"pip install speechbrain-sed-condmix[{dashboard}]" in message
    assert "dashboard: file" in message


def test_a_dashboard_needs_a_folder(tmp_path):
    with pytest.raises(ValueError, match="save_dir"):
        SEDTrainLogger(tmp_path / "log.txt", "tensorboard")
