"""AtomicCheckpointer: atomic writes, recovery that skips damaged
checkpoints, disk full, and saves cut short by SIGKILL."""

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_sed_condmix.checkpointing import (
    CHECKSUM_FILE,
    PARTIAL_PREFIX,
    AtomicCheckpointer,
    CheckpointWriteError,
    NoUsableCheckpointError,
    checkpoint_problem,
)

NAMES = ("a", "b", "c")


def models():
    return {name: torch.nn.Linear(3, 3) for name in NAMES}


def fill(modules, value):
    with torch.no_grad():
        for module in modules.values():
            module.weight.fill_(value)
            module.bias.fill_(value)


def values(modules):
    """The one value each module was filled with."""
    found = set()
    for module in modules.values():
        found.update(module.weight.flatten().tolist())
        found.update(module.bias.flatten().tolist())
    return found


def saved(save, count, keep=1, **kwargs):
    """``count`` checkpoints, the i-th with every weight equal to i."""
    modules = models()
    ckpter = AtomicCheckpointer(save, modules, **kwargs)
    for i in range(1, count + 1):
        fill(modules, float(i))
        ckpter.save_and_keep_only(meta={"i": i}, num_to_keep=keep)
    return ckpter


def test_checkpoint_is_listed_only_once_complete(tmp_path):
    seen = []

    def save_and_look(obj, path):
        torch.save(obj.state_dict(), path)
        # Half-way through the save, recovery still sees only the old one.
        seen.append([c.meta["i"] for c in ckpter.list_checkpoints()])

    modules = models()
    ckpter = AtomicCheckpointer(
        tmp_path, modules, custom_save_hooks={"b": save_and_look}
    )
    ckpter.save_checkpoint(meta={"i": 1})
    ckpter.save_checkpoint(meta={"i": 2})
    assert seen == [[], [1]]
    newest = ckpter.find_checkpoint()
    assert newest.meta["i"] == 2
    assert sorted(p.name for p in newest.path.iterdir()) == [
        CHECKSUM_FILE,
        "CKPT.yaml",
        "a.ckpt",
        "b.ckpt",
        "c.ckpt",
    ]
    assert checkpoint_problem(newest.path) is None
    assert not list(tmp_path.glob(PARTIAL_PREFIX + "*"))


def test_newest_two_are_kept_for_fallback(tmp_path):
    ckpter = saved(tmp_path, 4)
    assert sorted(c.meta["i"] for c in ckpter.list_checkpoints()) == [3, 4]
    # keep_newest=1 is SpeechBrain's behaviour with num_to_keep=1.
    one = saved(tmp_path / "one", 3, keep_newest=1)
    assert [c.meta["i"] for c in one.list_checkpoints()] == [3]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "b.ckpt: 100 bytes"),
        (lambda p: p.unlink(), "b.ckpt: missing"),
        (
            lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8),
            "b.ckpt: checksum mismatch",
        ),
    ],
)
def test_damaged_newest_is_skipped_with_a_warning(
    tmp_path, caplog, damage, reason
):
    saved(tmp_path, 2)
    modules = models()
    ckpter = AtomicCheckpointer(tmp_path, modules)
    newest = ckpter.find_checkpoint()
    damage(newest.path / "b.ckpt")
    with caplog.at_level(logging.WARNING):
        loaded = ckpter.recover_if_possible()
    assert loaded.meta["i"] == 1
    assert values(modules) == {1.0}
    assert f"Skipping damaged checkpoint {newest.path}: {reason}" in caplog.text


def test_unreadable_meta_and_legacy_truncated_archive_are_skipped(
    tmp_path, caplog
):
    # Checkpoints written by SpeechBrain's Checkpointer (no manifest).
    modules = models()
    plain = Checkpointer(tmp_path, modules)
    for i in (1, 2, 3):
        fill(modules, float(i))
        plain.save_checkpoint(meta={"i": i})
    first, second, third = sorted(
        plain.list_checkpoints(), key=lambda c: c.meta["i"]
    )
    (third.path / "CKPT.yaml").write_text("unixtime: [\n")
    # What a kill during SpeechBrain's save leaves: a cut torch archive.
    student = second.path / "a.ckpt"
    student.write_bytes(student.read_bytes()[:200])
    with pytest.raises(yaml.YAMLError):
        plain.recover_if_possible()  # SpeechBrain's recovery stops here

    modules = models()
    with caplog.at_level(logging.WARNING):
        loaded = AtomicCheckpointer(tmp_path, modules).recover_if_possible()
    assert loaded.path == first.path and values(modules) == {1.0}
    assert f"{third.path}: CKPT.yaml:" in caplog.text
    assert f"{second.path}: a.ckpt: not a complete torch archive" in (
        caplog.text
    )


def test_no_usable_checkpoint_stops_unless_fresh_start_allowed(
    tmp_path, caplog
):
    ckpter = saved(tmp_path, 2)
    ckpts = ckpter.list_checkpoints()
    for ckpt in ckpts:
        path = ckpt.path / "c.ckpt"
        path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(NoUsableCheckpointError) as info:
        AtomicCheckpointer(tmp_path, models()).recover_if_possible()
    message = str(info.value)
    assert f"No usable checkpoint in {tmp_path}; found 2 damaged" in message
    for ckpt in ckpts:
        assert f"{ckpt.path}: c.ckpt: 50 bytes" in message
    assert "--allow_fresh_start=True" in message

    modules = models()
    fill(modules, 7.0)
    fresh = AtomicCheckpointer(tmp_path, modules, allow_fresh_start=True)
    with caplog.at_level(logging.WARNING):
        assert fresh.recover_if_possible() is None
    assert "starting from the beginning" in caplog.text
    assert values(modules) == {7.0}  # nothing was loaded
    # No checkpoint at all is a first run, not an error.
    assert (
        AtomicCheckpointer(tmp_path / "new", models()).recover_if_possible()
        is None
    )


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpter = saved(tmp_path, 1)
    before = ckpter.list_checkpoints()
    real_save = torch.save
    calls = []

    def full_disk(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second file: half written, then ENOSPC
            with open(path, "wb") as handle:
                handle.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    fill(ckpter.recoverables, 2.0)
    with pytest.raises(CheckpointWriteError) as info:
        ckpter.save_and_keep_only(meta={"i": 2}, num_to_keep=1)
    monkeypatch.setattr(torch, "save", real_save)
    message = str(info.value)
    assert f"Could not write a checkpoint in {tmp_path}: no space left" in (
        message
    )
    assert "free there; a checkpoint needs about " in message
    assert f"The previous checkpoint {before[0].path} is intact." in message
    assert isinstance(info.value.__cause__, OSError)
    # The partial folder is gone, the previous checkpoint loads.
    assert not list(tmp_path.glob(PARTIAL_PREFIX + "*"))
    assert ckpter.list_checkpoints() == before
    modules = models()
    assert AtomicCheckpointer(tmp_path, modules).recover_if_possible()
    assert values(modules) == {1.0}


#: A child process that saves checkpoint i = 1, 2, ... with every weight
#: equal to i, printing and sleeping after each file it writes.
CHILD = textwrap.dedent(
    """
    import sys, time, torch
    from speechbrain_sed_condmix import checkpointing
    from speechbrain_sed_condmix.checkpointing import AtomicCheckpointer

    names = ("a", "b", "c")
    modules = {n: torch.nn.Linear(3, 3) for n in names}
    state = {"i": 0}

    def slow(name):
        def save(obj, path):
            torch.save(obj.state_dict(), path)
            print(f"{state['i']} wrote {name}", flush=True)
            time.sleep(0.3)
        return save

    def pause_after(label, function):
        def wrapped(*args, **kwargs):
            result = function(*args, **kwargs)
            print(f"{state['i']} {label}", flush=True)
            time.sleep(0.3)
            return result
        return wrapped

    # The steps after the parameter files: manifest, rename, deletion.
    checkpointing.write_checksums = pause_after(
        "checksums", checkpointing.write_checksums
    )
    AtomicCheckpointer._replace = pause_after(
        "renamed", AtomicCheckpointer._replace
    )
    ckpter = AtomicCheckpointer(
        sys.argv[1], modules, custom_save_hooks={n: slow(n) for n in names}
    )
    for i in range(1, 10):
        state["i"] = i
        with torch.no_grad():
            for m in modules.values():
                m.weight.fill_(i)
                m.bias.fill_(i)
        ckpter.save_and_keep_only(meta={"i": i}, num_to_keep=1)
        print(f"{i} saved", flush=True)
        time.sleep(0.3)
    """
)


@pytest.mark.slow  # a child process per kill point
@pytest.mark.parametrize(
    "kill_after, expected",
    [
        ("2 wrote a", 1),  # between parameter files
        ("2 checksums", 1),  # every file written, not yet renamed
        ("3 renamed", 3),  # complete; checkpoint 1 not yet deleted
    ],
)
def test_kill_during_the_save_leaves_a_complete_checkpoint(
    tmp_path, kill_after, expected
):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.strip() == kill_after:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The cut save left its partial folder; recovery removes it and loads
    # the newest complete checkpoint, every file from the same save.
    modules = models()
    ckpter = AtomicCheckpointer(tmp_path, modules)
    loaded = ckpter.recover_if_possible()
    assert loaded.meta["i"] == expected
    assert values(modules) == {float(expected)}
    assert not list(tmp_path.glob(PARTIAL_PREFIX + "*"))


#: One of 2 gloo processes: a good save, then a save during which the main
#: process's disk is full. Prints what each process saw.
DDP_CHILD = textwrap.dedent(
    """
    import errno, sys, torch
    import torch.distributed as dist
    from speechbrain_sed_condmix.checkpointing import (
        AtomicCheckpointer, CheckpointWriteError,
    )

    dist.init_process_group("gloo")
    model = torch.nn.Linear(3, 3)
    ckpter = AtomicCheckpointer(sys.argv[1], {"model": model})
    ckpter.save_and_keep_only(meta={"i": 1})
    if dist.get_rank() == 0:
        def full(obj, path, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        torch.save = full
    try:
        ckpter.save_and_keep_only(meta={"i": 2})
        print("saved")
    except CheckpointWriteError as err:
        print("error:", str(err).replace("\\n", " "))
    dist.destroy_process_group()
    """
)


@pytest.mark.slow  # two gloo processes
def test_disk_full_under_ddp_stops_every_rank_with_the_message(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DDP_CHILD, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(29500 + os.getpid() % 1000),
            },
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=300)[0].strip() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert outputs[0] == outputs[1], outputs
    assert outputs[0].startswith(
        f"error: Could not write a checkpoint in {tmp_path}: no space left"
    )
    modules = {"model": torch.nn.Linear(3, 3)}
    loaded = AtomicCheckpointer(tmp_path, modules).recover_if_possible()
    assert loaded.meta["i"] == 1
