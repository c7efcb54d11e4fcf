"""Streaming detection: emission latency and real-time factor on CPU.

For each model and setting, 60 s of noise whose loudness changes every
0.7 s is pushed through ``SoundEventDetector.stream`` in 0.1 s chunks, as
fast as the machine allows. The models are imported with ``sed-import``
from generated checkpoints in the released layouts (random weights): the
DCASE 2023 CRNN baseline and a tiny ATST-SED (ATST-Frame 128 wide, 2
blocks, 2 heads). Thresholds sit at each class's median offline score, so
that events are many; with random weights they mean nothing, but their
timing is that of any model of this size.

Figures per setting:

* ``emission_after_onset_s``: audio time from an event's onset to its
  emission (seconds of audio received, plus the compute time of the chunk
  that settled it), median and maximum;
* ``emission_after_offset_s``: the same from the event's offset, with the
  bound :meth:`EventStream.latency` (events settled by the first window,
  which needs 10 s of audio, are left out of the maximum);
* ``rtf``: compute time / audio time of the whole stream.

Usage: ``python benchmarks/streaming_latency.py > out.json`` (1 thread,
60 s per stream; ``--seconds``, ``--models``, ``--threads`` change that).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import environment

RATE, CHUNK = 16000, 0.1
#: (hop, look-ahead) in seconds; None: the default, (window - hop) / 2.
SETTINGS = [(1.0, None), (0.5, 1.0), (2.0, 2.0)]
#: Causal CRNN: median filter frames (7: the recipes'), carried state.
CAUSAL_SETTINGS = [7, 3, 1]


def _checkpoint(kind, folder):
    from speechbrain_sed_condmix.lobes.atst import ATSTFrame
    from speechbrain_sed_condmix.lobes.atst_sed import ATSTSED
    from speechbrain_sed_condmix.lobes.crnn import CRNN

    torch.manual_seed(0)
    if kind == "desed-crnn":
        model = CRNN()
    else:
        model = ATSTSED(
            ATSTFrame(embed_dim=128, depth=2, num_heads=2), activation="cg"
        )
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            value = 0.2 * torch.randn(value.shape)
            if key.endswith("running_var"):
                value = value.abs() + 0.5
        state[key] = value
    path = Path(folder) / f"{kind}.ckpt"
    torch.save(
        {
            "state_dict": {
                f"sed_{w}.{k}": v
                for w in ("student", "teacher")
                for k, v in state.items()
            }
        },
        path,
    )
    return path


def _causal_folder(folder):
    """A detector folder of a causal CRNN (``crnn_mt.yaml --causal=True``,
    the recipe's full size), random weights as in :func:`_checkpoint`."""
    from hyperpyyaml import load_hyperpyyaml, resolve_references

    from speechbrain_sed_condmix.export import export_detector

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "recipes/DESED/SED/hparams/crnn_mt.yaml").read_text()
    exp = Path(folder) / "causal_experiment"
    exp.mkdir()
    overrides = {
        "data_folder": str(exp / "data"),
        "output_folder": str(exp),
        "prep_folder": str(exp / "prep"),
        "causal": True,
    }
    resolved = resolve_references(text, overrides).getvalue()
    (exp / "hyperparams.yaml").write_text(resolved)
    hparams = load_hyperpyyaml(resolved)
    torch.manual_seed(0)
    state = {}
    for key, value in hparams["student"].state_dict().items():
        if value.is_floating_point():
            value = 0.2 * torch.randn(value.shape)
            if key.endswith("running_var"):
                value = value.abs() + 0.5
        state[key] = value
    hparams["student"].load_state_dict(state)
    teacher = hparams["teacher"]
    teacher.model.load_state_dict(state)
    ckpt = exp / "save" / "CKPT+random"
    ckpt.mkdir(parents=True)
    torch.save(hparams["student"].state_dict(), ckpt / "student.ckpt")
    torch.save(teacher.state_dict(), ckpt / "teacher.ckpt")
    (ckpt / "CKPT.yaml").write_text("end-of-epoch: true\nunixtime: 0\n")
    return export_detector(exp, Path(folder) / "causal-crnn")


def _signal(seconds):
    rng = np.random.default_rng(0)
    n = int(seconds * RATE)
    gain = np.repeat(rng.uniform(0.01, 1.0, n // 11200 + 1), 11200)[:n]
    return (0.3 * gain * rng.standard_normal(n)).astype(np.float32)


def measure(kind, folder, seconds):
    from speechbrain_sed_condmix.causal_streaming import CausalEventStream
    from speechbrain_sed_condmix.importing import import_release
    from speechbrain_sed_condmix.inference import SoundEventDetector
    from speechbrain_sed_condmix.postprocessing import PostProcessing
    from speechbrain_sed_condmix.streaming import EventStream

    if kind == "causal-crnn":
        out = _causal_folder(folder)
    else:
        out = import_release(
            kind, _checkpoint(kind, folder), Path(folder) / kind
        )
    det = SoundEventDetector.from_hparams(
        source=str(out), savedir=Path(folder) / f"{kind}_sd"
    )
    wav = _signal(seconds)
    raw = det.raw_frame_scores([torch.from_numpy(wav)])[0]
    det.postprocessing = PostProcessing(
        det.classes,
        median_filter=det.postprocessing.median_filter,
        threshold={c: float(raw[c].median()) for c in det.classes},
    )
    size = int(CHUNK * RATE)
    window = det.window_samples / RATE
    results = []
    settings = CAUSAL_SETTINGS if det.causal else SETTINGS
    for setting in settings:
        if det.causal:
            # No start-up window: every event counts.
            window = 0.0
            stream = CausalEventStream(det, median_filter=setting)
            row = {"median_filter_frames": setting}
        else:
            hop, look_ahead = setting
            stream = EventStream(det, hop=hop, look_ahead=look_ahead)
            row = {"hop_s": hop}
        after_onset, after_offset, busy = [], [], 0.0
        for first in range(0, len(wav) + 1, size):
            start = time.perf_counter()
            chunk = wav[first : first + size]
            events = stream.push(chunk) if len(chunk) else stream.finish()
            spent = time.perf_counter() - start
            busy += spent
            for event in events:
                emitted = event.emitted_at + spent
                after_onset.append(emitted - event.onset)
                if event.emitted_at > window:  # past the start-up window
                    after_offset.append(emitted - event.offset)
        results.append(
            {
                **row,
                "look_ahead_s": round(stream.look_ahead, 3),
                "latency_bound_after_offset_s": round(stream.latency(), 3),
                "events": len(after_onset),
                "emission_after_onset_s": {
                    "median": _stat(np.median, after_onset),
                    "max": _stat(np.max, after_onset),
                },
                "emission_after_offset_s": {
                    "median": _stat(np.median, after_offset),
                    "max": _stat(np.max, after_offset),
                },
                "rtf": round(busy / seconds, 4),
            }
        )
    return {"model": kind, "causal": det.causal, "results": results}


def _stat(function, values):
    return round(float(function(values)), 3) if values else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="audio per stream"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=["causal-crnn", "desed-crnn", "atst-sed"],
        default=["causal-crnn", "desed-crnn", "atst-sed"],
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        models = [measure(k, folder, args.seconds) for k in args.models]
    print(
        json.dumps(
            {
                "benchmark": "streaming_latency",
                **environment("cpu"),
                "settings": {
                    "audio_s": args.seconds,
                    "chunk_s": CHUNK,
                    "models": "random weights in the released layouts; "
                    "atst-sed: ATST-Frame 128 wide, 2 blocks, 2 heads; "
                    "causal-crnn: crnn_mt.yaml --causal=True (full "
                    "size), streamed with carried state",
                    "mode": "as fast as possible, one process",
                },
                "models": models,
            }
        )
    )


if __name__ == "__main__":
    main()
