"""The TensorBoard dashboard holds what train_log.txt holds.

The tiny crnn_mt run of ``tiny_crnn_experiment`` (generated mini-DESED,
not DESED) logs with ``--dashboard=tensorboard``; its event files are read
back with TensorBoard's own reader and compared with ``train_log.txt``,
value by value, to the precision of the text log.
"""

import math

import pytest

pytest.importorskip("tensorboard")


def parse_train_log(path):
    """``{tag: {step: (value, tolerance)}}`` from a ``train_log.txt``.

    Tags as the dashboard names them: a ``stats_meta`` key as it is, a
    stage's key as ``<key>/<stage>``; the step is the line's ``epoch``
    (``Epoch loaded`` on the test line). The tolerance is half a unit of
    the last printed digit.
    """
    logged = {}
    for line in path.read_text().splitlines():
        meta, *stages = line.split(" - ")
        items = [item.split(": ") for item in meta.split(", ")]
        meta = dict(items)
        step = int(meta.get("epoch", meta.get("Epoch loaded")))
        pairs = list(meta.items())
        for part in stages:
            stage = part.split(" ", 1)[0]
            for item in part.split(", "):
                key, value = item.removeprefix(stage + " ").split(": ")
                pairs.append((f"{key}/{stage}", value))
        for tag, text in pairs:
            logged.setdefault(tag, {})[step] = (float(text), ulp(text) / 2)
    return logged


def ulp(text):
    """A unit of the last digit of a number as FileTrainLogger prints it."""
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def test_ulp():
    assert ulp("1.25e-03") == pytest.approx(1e-5)
    assert ulp("12.50") == pytest.approx(0.01)
    assert ulp("3") == 1.0


def test_tensorboard_scalars_match_train_log(tiny_crnn_experiment):
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    out, _ = tiny_crnn_experiment
    events = list((out / "dashboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    board = EventAccumulator(str(out / "dashboard"))
    board.Reload()
    logged = parse_train_log(out / "train_log.txt")
    tags = set(board.Tags()["scalars"])
    assert tags == set(logged)
    # What a researcher watches: each term and its effective weight, each
    # group's LR, the EMA decay, student and teacher metrics.
    for tag in (
        "strong/train",
        "weight_strong/train",
        "consistency/train",
        "weight_consistency/train",
        "lr_cnn",
        "lr_rnn",
        "ema_decay",
        "student_psds1/valid",
        "teacher_psds1/valid",
        "teacher_intersection_f1/valid",
        "student_psds2/test",
        "teacher_psds2/test",
    ):
        assert tag in tags, tag
    for tag, expected in logged.items():
        got = {event.step: event.value for event in board.Scalars(tag)}
        assert set(got) == set(expected), tag
        for step, (value, tolerance) in expected.items():
            # float32 in the event file: its rounding on top of the text's.
            slack = tolerance + 1e-6 * abs(value)
            assert math.isclose(got[step], value, abs_tol=slack), (
                tag,
                step,
                got[step],
                value,
            )
    ema = next(iter(logged["ema_decay"].values()))[0]
    assert 0.0 < ema < 1.0
    images = set(board.Tags()["images"])
    for model in ("student", "teacher"):
        for scenario in ("psds1", "psds2"):
            assert f"psd_roc/{model}_{scenario}" in images
    height, width = (
        board.Images("psd_roc/teacher_psds1")[0].height,
        board.Images("psd_roc/teacher_psds1")[0].width,
    )
    assert height > 100 and width > 100


def test_train_log_parser_reads_every_item(tmp_path):
    log = tmp_path / "train_log.txt"
    log.write_text(
        "epoch: 2, lr: 1.00e-03 - train loss: 5.00e-01, train weight_mt: "
        "2.00 - valid teacher_psds1: 2.50e-01\n"
        "Epoch loaded: 2 - test teacher_psds2: 1.25e-01\n"
    )
    logged = parse_train_log(log)
    assert logged == {
        "epoch": {2: (2.0, 0.5)},
        "lr": {2: (1e-3, pytest.approx(5e-6))},
        "loss/train": {2: (0.5, pytest.approx(5e-4))},
        "weight_mt/train": {2: (2.0, pytest.approx(5e-3))},
        "teacher_psds1/valid": {2: (0.25, pytest.approx(5e-4))},
        "Epoch loaded": {2: (2.0, 0.5)},
        "teacher_psds2/test": {2: (0.125, pytest.approx(5e-4))},
    }
