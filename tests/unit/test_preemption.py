"""GracefulPreemption on a small Brain: where a signal stops the run."""

import os
import signal

import pytest
import speechbrain as sb
import torch
import yaml

from speechbrain_sed_condmix.checkpointing import AtomicCheckpointer
from speechbrain_sed_condmix.preemption import (
    PREEMPTED_EXIT_STATUS,
    GracefulPreemption,
    Preempted,
    PreemptionHandler,
)

STEPS = 5  # batches per epoch


class TinyBrain(GracefulPreemption, sb.Brain):
    """Regression on random data; signals itself where the test asks."""

    signal_at = None  # ("train", step) or ("valid", step)

    def compute_forward(self, batch, stage):
        return self.modules.model(batch[0])

    def compute_objectives(self, predictions, batch, stage):
        where = "train" if stage == sb.Stage.TRAIN else "valid"
        if self.signal_at == (where, self.step):
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.nn.functional.mse_loss(predictions, batch[1])


def make_brain(tmp_path, signal_at):
    model = torch.nn.Linear(2, 1)
    counter = sb.utils.epoch_loop.EpochCounter(3)
    ckpter = AtomicCheckpointer(
        tmp_path / "save", {"model": model, "counter": counter}
    )
    brain = TinyBrain(
        modules={"model": model},
        opt_class=lambda params: torch.optim.SGD(params, lr=0.1),
        run_opts={"device": "cpu", "noprogressbar": True},
        checkpointer=ckpter,
    )
    brain.signal_at = signal_at
    ckpter.add_recoverable("brain", brain)
    return brain, counter


def data():
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.randn(4, 2, generator=gen), torch.randn(4, 1, generator=gen))
        for _ in range(STEPS)
    ]


@pytest.fixture
def restore_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM,)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def newest_meta(brain):
    ckpt = brain.checkpointer.find_checkpoint()
    return ckpt.meta, yaml.safe_load((ckpt.path / "brain.ckpt").read_text())


def test_signal_in_training_stops_after_that_step(tmp_path, restore_handlers):
    brain, counter = make_brain(tmp_path, ("train", 3))
    with pytest.raises(Preempted) as info:
        brain.fit(counter, data(), data())
    assert info.value.code == PREEMPTED_EXIT_STATUS
    meta, state = newest_meta(brain)
    assert meta["end-of-epoch"] is False
    assert state["step"] == 3 and state["optimizer_step"] == 3
    assert counter.current == 1


def test_signal_in_validation_stops_after_its_checkpoint(
    tmp_path, restore_handlers
):
    brain, counter = make_brain(tmp_path, ("valid", 2))

    def on_stage_end(stage, stage_loss, epoch=None):
        if stage == sb.Stage.VALID:
            brain.checkpointer.save_and_keep_only(meta={"epoch": epoch})

    brain.on_stage_end = on_stage_end
    with pytest.raises(Preempted):
        brain.fit(counter, data(), data())
    meta, state = newest_meta(brain)
    # Epoch 1 ended with its checkpoint; epoch 2 did not start.
    assert meta["end-of-epoch"] is True and meta["epoch"] == 1
    assert state["optimizer_step"] == STEPS
    assert counter.current == 2  # the counter moved on, no batch ran


def test_outside_fit_the_signal_exits_at_once(restore_handlers):
    handler = PreemptionHandler()
    handler.install()
    with pytest.raises(Preempted):
        os.kill(os.getpid(), signal.SIGTERM)
    assert handler.received == "SIGTERM"
