"""A stand-in for a recipe's train.py in the sed-tune tests (no model).

``fake_train.py HPARAMS --x=X --choice=C --output_folder=OUT --train_only``
"trains" ``epochs`` epochs of ``sleep`` seconds each (``HPARAMS`` keys,
overridable). After epoch e it logs ``valid score: e * X`` in SpeechBrain's
train-log format and keeps a checkpoint whose meta holds the exact value,
as the Brain does. SIGTERM: exit 75 after the current epoch, which a rerun
resumes (``progress.json``). Runs with ``x`` below ``slow_below`` (if
given) take ten times as long per epoch. Every start appends a line to
``starts.txt``: ``<parent pid> start`` or ``<parent pid> resume <done>``.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

import yaml


def main(argv):
    hparams = yaml.safe_load(Path(argv[0]).read_text())
    for item in argv[1:]:
        if item.startswith("--") and "=" in item:
            key, value = item[2:].split("=", 1)
            hparams[key] = yaml.safe_load(value)
    out = Path(hparams["output_folder"])
    (out / "save").mkdir(parents=True, exist_ok=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    progress = out / "save" / "progress.json"
    done = (
        json.loads(progress.read_text())["epoch"] if progress.is_file() else 0
    )
    with open(out / "starts.txt", "a") as fout:
        what = f"resume {done}" if done else "start"
        fout.write(f"{os.getppid()} {what}\n")
    for epoch in range(done + 1, hparams["epochs"] + 1):
        slow = float(hparams["x"]) < hparams.get("slow_below", 0)
        time.sleep(hparams["sleep"] * (10 if slow else 1))
        value = epoch * float(hparams["x"])
        with open(out / "train_log.txt", "a") as fout:
            fout.write(
                f"epoch: {epoch}, lr: 1.00e-03 - train loss: 1.00 - valid "
                f"loss: 1.00, valid score: {value:.2e}\n"
            )
        ckpt = out / "save" / f"CKPT+{epoch}"
        ckpt.mkdir()
        (ckpt / "CKPT.yaml").write_text(yaml.safe_dump({"score": value}))
        progress.write_text(json.dumps({"epoch": epoch}))
        if stop:
            return 75
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
