#!/usr/bin/env python3
"""The linear-probe gate of ATST-Frame pretraining on mini-DESED.

Does the self-supervised recipe (``recipes/DESED/SSL``) teach a tiny
ATST-Frame anything a frame classifier can use? Per seed:

A. **Pretraining** (resumable): ``recipes/DESED/SSL/train.py`` on the
   unlabeled pool of a generated mini-DESED (``sed-mini-desed --scale ssl
   --unlabeled N``), with a tiny encoder (dim 128, 4 blocks by default), in
   ``OUT/pretrain/<seed>``. A finished run (``pretrain_done.json``) is
   skipped; a stopped one (exit 75, a kill, a pre-emption) resumes from its
   checkpoint when the same command is run again. Its per-epoch loss comes
   from the run's ``train_log.txt``.
B. **Probe**: two frozen encoders of the same shape,

   * ``pretrained``: the teacher encoder of the run's
     ``atst_frame_pretrain.ckpt`` (what ATST-SED loads);
   * ``random``: the encoder built from the same YAML with the same seed
     and flags, i.e. the very initialisation the pretraining started from,

   give frame embeddings (40 ms) of every clip cut or padded to 10 s. A
   linear classifier (features standardised on the training clips, one
   logit per class, BCE, Adam) is trained on the frame labels of the
   strong training clips (``synth_train`` + ``strong_train``). Its learning
   rate and number of epochs are chosen per encoder on ``synth_val`` only
   (frame mAP); the chosen probe is then scored once on ``validation``
   (the reporting clips): frame mAP (macro average precision over
   classes, threshold-free), frame F1 at 0.5, and PSDS1, PSDS2 and
   intersection F1 from ``metrics.compute_sed_metrics`` on the raw frame
   probabilities (no post-processing).

**Seeds are pretraining seeds.** Seed ``s`` pretrains with ``--seed=s``,
builds the random encoder with seed ``s`` and trains both probes with seed
``s`` (the same initialisation and frame order), so the pair differs only in
the pretraining. The gate asks whether pretraining helps, and the spread of
that answer comes from the pretraining run itself: seeds of the probe alone,
over one pretrained encoder, would measure only the probe's noise and
understate the SE.

**Gate**: over at least 3 paired seeds, the mean of ``pretrained -
random`` in validation frame mAP is above 2 x its paired standard error
(``stdev(diffs) / sqrt(n)``). The other metrics are reported the same way.

Each seed's record (both encoders' metrics, the probe's choice, the loss
curve, steps, wall times, commands) goes to
``benchmarks/measured/pretrain_probe_runs/<key>/<seed>.json``: commit it,
and a later session, without the checkpoints, skips that seed. The key is a
hash of the data, pretraining and probe settings, so a change starts
afresh.

    python benchmarks/pretrain_probe.py --out /work/probe --device cuda
    python benchmarks/pretrain_probe.py --out /work/probe --report

``--report`` trains nothing: it writes ``benchmarks/measured/
pretrain_probe_<scale>_<N>.json`` (records, paired statistics, the gate) and
two PNGs beside it (the pretraining loss curves, the paired differences).
mini-DESED is generated audio, not DESED.
"""

import argparse
import copy
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/DESED/SSL"
PRETRAIN_YAML = RECIPE / "hparams/atst_frame_pretrain.yaml"
MEASURED = REPO / "benchmarks/measured"
RECORDS = MEASURED / "pretrain_probe_runs"

#: The two frozen encoders of every seed (contract names).
ENCODERS = ("pretrained", "random")
#: The metric the gate decides on, and the others reported alike.
GATE_METRIC = "frame_map"
METRICS = ("frame_map", "frame_f1", "psds1", "psds2", "intersection_f1")
GATE_MIN_SEEDS = 3
#: Strong training clips (frame labels) and the two scored splits.
TRAIN_SUBSETS = ("synth_train", "strong_train")
SELECT_SUBSET = "synth_val"
REPORT_SUBSET = "validation"
#: The clip length the encoder sees (250 tokens of 40 ms).
CLIP_SECONDS = 10.0
SAMPLE_RATE = 16000
HOP = 160
PATCH_FRAMES = 4

#: The tiny encoder and its schedule (recipe overrides). Peak LR 1e-3 at
#: batch 64 (base_lr x 64 / 256); a 1,000-clip bank (about 256 MB in each
#: checkpoint, against 512 MB at the recipe's 2000).
PRETRAIN_FLAGS = [
    "--atst_dim=128",
    "--atst_depth=4",
    "--atst_heads=4",
    "--head_hidden=512",
    "--head_out=128",
    "--batch_size=64",
    "--number_of_epochs=20",
    "--warmup_epochs=2",
    "--base_lr=0.004",
    "--ema_base=0.99",
    "--bank_size=1000",
    "--ckpt_interval_minutes=10",
]
#: The flags that shape the encoder (the random encoder gets them too).
SHAPE_FLAGS = (
    "atst_dim",
    "atst_depth",
    "atst_heads",
    "head_hidden",
    "head_out",
)

#: The probe's grid, searched on synth_val only: learning rates, and the
#: epochs at which each run is scored (one run per rate, to the largest).
PROBE_LRS = (1e-3, 1e-2, 1e-1)
PROBE_EPOCHS = (5, 10, 20, 40, 80)
PROBE_BATCH = 1024


# ----------------------------------------------------------------------
# Paired statistics and the gate


def paired_stats(pretrained, random):
    """Mean paired difference ``pretrained - random`` and its SE.

    Arguments
    ---------
    pretrained, random : dict
        ``{seed: value}``; only the seeds in both count.

    Returns
    -------
    dict
        ``n``, ``seeds``, ``diffs``, ``mean``, ``sd`` and ``se``
        (``sd / sqrt(n)``; ``None`` below two pairs) and ``t``.

    Example
    -------
    >>> s = paired_stats({1: 0.5, 2: 0.7, 3: 0.6}, {1: 0.4, 2: 0.5, 3: 0.6})
    >>> s["n"], round(s["mean"], 6), round(s["se"], 6)
    (3, 0.1, 0.057735)
    """
    seeds = sorted(set(pretrained) & set(random))
    diffs = [pretrained[s] - random[s] for s in seeds]
    out = {"n": len(diffs), "seeds": seeds, "diffs": diffs}
    if not diffs:
        return out
    out["mean"] = statistics.fmean(diffs)
    if len(diffs) < 2:
        out.update(sd=None, se=None, t=None)
        return out
    out["sd"] = statistics.stdev(diffs)
    out["se"] = out["sd"] / math.sqrt(len(diffs))
    out["t"] = out["mean"] / out["se"] if out["se"] else None
    return out


def gate_decision(stats, min_seeds=GATE_MIN_SEEDS):
    """Whether paired statistics pass the gate: n >= ``min_seeds`` and
    mean > 2 SE (a zero SE with a positive mean passes).

    Example
    -------
    >>> gate_decision({"n": 3, "mean": 0.1, "se": 0.04})
    True
    >>> gate_decision({"n": 3, "mean": 0.1, "se": 0.05})
    False
    >>> gate_decision({"n": 2, "mean": 0.1, "se": 0.01})
    False
    """
    se = stats.get("se")
    return bool(
        stats.get("n", 0) >= min_seeds
        and se is not None
        and stats["mean"] > 2 * se
    )


def summarise(records, metrics=METRICS, min_seeds=GATE_MIN_SEEDS):
    """Paired statistics of every metric over the seed records, and the
    gate on ``GATE_METRIC``."""
    paired = {}
    for metric in metrics:
        values = {
            enc: {
                r["seed"]: r["validation"][enc][metric]
                for r in records
                if metric in r["validation"][enc]
            }
            for enc in ENCODERS
        }
        paired[metric] = paired_stats(values["pretrained"], values["random"])
        for enc in ENCODERS:
            if values[enc]:
                paired[metric][f"{enc}_mean"] = statistics.fmean(
                    values[enc].values()
                )
    gate = paired[GATE_METRIC]
    se = gate.get("se")
    return {
        "paired": paired,
        "gate": {
            "metric": f"validation {GATE_METRIC}, pretrained - random",
            "rule": f"mean > 2 SE over >= {min_seeds} paired seeds",
            "n": gate["n"],
            "mean": gate.get("mean"),
            "se": se,
            "mdd": None if se is None else 2 * se,
            "passes": gate_decision(gate, min_seeds),
        },
    }


# ----------------------------------------------------------------------
# The linear probe


def standardiser(features):
    """Per-dimension mean and std of ``[N, T, D]`` training features."""
    flat = features.reshape(-1, features.shape[-1])
    return flat.mean(0), flat.std(0).clamp_min(1e-6)


def train_probe(
    features,
    targets,
    *,
    lr,
    epochs,
    seed,
    batch_size=PROBE_BATCH,
    score_at=(),
    score_fn=None,
):
    """Train a linear frame classifier on frozen features.

    Arguments
    ---------
    features : torch.Tensor
        ``[N, T, D]`` frame features of the training clips.
    targets : torch.Tensor
        ``[N, T, C]`` binary frame labels.
    lr : float
        Adam's learning rate.
    epochs : int
        Passes over the training frames (shuffled, ``batch_size`` frames
        a step).
    seed : int
        Seeds the classifier's initialisation and the frame order.
    batch_size : int
        Frames per step.
    score_at : sequence of int
        Epochs after which ``score_fn(probe)`` is called.
    score_fn : callable, optional
        Takes the probe, returns a score (recorded per epoch).

    Returns
    -------
    (LinearProbe, dict)
        The probe after ``epochs`` epochs and ``{epoch: (score, state)}``
        at the ``score_at`` epochs (``state``: a copy of its weights).

    Example
    -------
    >>> x = torch.randn(4, 50, 3)
    >>> y = (x[..., :1] > 0).float()
    >>> probe, _ = train_probe(x, y, lr=0.05, epochs=30, seed=0)
    >>> acc = ((probe(x) > 0).float() == y).float().mean().item()
    >>> acc > 0.95
    True
    """
    generator = torch.Generator().manual_seed(seed)
    mean, std = standardiser(features)
    probe = LinearProbe(features.shape[-1], targets.shape[-1], mean, std)
    with torch.no_grad():
        bound = 1.0 / math.sqrt(features.shape[-1])
        probe.linear.weight.uniform_(-bound, bound, generator=generator)
        probe.linear.bias.zero_()
    x = features.reshape(-1, features.shape[-1])
    y = targets.reshape(-1, targets.shape[-1]).float()
    optimiser = torch.optim.Adam(probe.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    scored = {}
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = loss_fn(probe(x[index]), y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if score_fn is not None and epoch in score_at:
            state = copy.deepcopy(probe.state_dict())
            scored[epoch] = (score_fn(probe), state)
    return probe, scored


class LinearProbe(torch.nn.Module):
    """Standardise with fixed training statistics, then one linear layer:
    ``[..., D]`` features -> ``[..., C]`` logits.

    Arguments
    ---------
    input_size : int
        Feature dimension ``D``.
    n_classes : int
        Number of classes ``C``.
    mean, std : torch.Tensor
        ``[D]`` statistics of the training features.

    Example
    -------
    >>> probe = LinearProbe(3, 2, torch.zeros(3), torch.ones(3))
    >>> probe(torch.randn(4, 5, 3)).shape
    torch.Size([4, 5, 2])
    """

    def __init__(self, input_size, n_classes, mean, std):
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.linear = torch.nn.Linear(input_size, n_classes)

    def forward(self, x):
        """Logits of the frames ``x``."""
        return self.linear((x - self.mean) / self.std)


def average_precision(scores, labels):
    """Average precision of one class: the sum over the distinct score
    thresholds, from the highest, of the gain in recall times the precision
    there (ties are one threshold, as in scikit-learn).

    Example
    -------
    >>> import numpy as np
    >>> # Ranked 0.9 (+), 0.8 (-), 0.7 (+): 1/2 * 1 + 1/2 * 2/3.
    >>> round(average_precision(np.array([0.9, 0.8, 0.7]),
    ...                         np.array([True, False, True])), 6)
    0.833333
    """
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # The last index of each run of equal scores.
    ends = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tps = np.cumsum(labels)[ends]
    precision = tps / (ends + 1)
    recall = tps / max(labels.sum(), 1)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def frame_metrics(probs, targets, threshold=0.5):
    """Frame-level macro metrics over the classes with positive frames.

    Arguments
    ---------
    probs, targets : torch.Tensor or numpy.ndarray
        ``[N, T, C]`` probabilities and binary labels.
    threshold : float
        Decision threshold of the F1 (a frame is active when its
        probability is above it).

    Returns
    -------
    dict
        ``frame_map`` (macro :func:`average_precision`), ``frame_f1``
        (macro F1 at ``threshold``) and ``frame_accuracy`` (all frames and
        classes).

    Example
    -------
    >>> import numpy as np
    >>> y = np.array([[[1, 0], [0, 1], [1, 0], [0, 0]]])
    >>> m = frame_metrics(y * 0.9 + 0.05, y)
    >>> m["frame_map"], m["frame_f1"], m["frame_accuracy"]
    (1.0, 1.0, 1.0)
    """
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets) > 0.5
    p = probs.reshape(-1, probs.shape[-1])
    y = targets.reshape(-1, targets.shape[-1])
    aps, f1s = [], []
    for c in range(y.shape[1]):
        if not y[:, c].any():
            continue
        aps.append(average_precision(p[:, c], y[:, c]))
        active = p[:, c] > threshold
        tp = np.sum(active & y[:, c])
        f1s.append(2 * tp / (active.sum() + y[:, c].sum()))
    return {
        "frame_map": float(np.mean(aps)) if aps else float("nan"),
        "frame_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "frame_accuracy": float(np.mean((p > threshold) == y)),
    }


def probe_logits(probe, features, batch_clips=64):
    """Probabilities of the probe on ``[N, T, D]`` features."""

    with torch.no_grad():
        return torch.cat(
            [
                torch.sigmoid(probe(features[i : i + batch_clips]))
                for i in range(0, len(features), batch_clips)
            ]
        )


def select_and_score(data, seed, lrs=PROBE_LRS, epochs=PROBE_EPOCHS):
    """Choose the probe's LR and epochs on synth_val, score on validation.

    Arguments
    ---------
    data : dict
        ``{split: (features, targets)}`` with ``"train"``, ``SELECT_SUBSET``
        and ``REPORT_SUBSET``.
    seed : int
        The probe's seed.
    lrs, epochs : sequence
        The grid.

    Returns
    -------
    (dict, torch.Tensor)
        The choice (``lr``, ``epochs``, the synth_val grid), the synth_val
        and validation frame metrics; and the validation probabilities.
    """
    x_sel, y_sel = data[SELECT_SUBSET]

    def score(probe):
        return frame_metrics(probe_logits(probe, x_sel), y_sel)[GATE_METRIC]

    grid, best = [], None
    for lr in lrs:
        probe, scored = train_probe(
            *data["train"],
            lr=lr,
            epochs=max(epochs),
            seed=seed,
            score_at=epochs,
            score_fn=score,
        )
        for n_epochs, (value, state) in sorted(scored.items()):
            grid.append({"lr": lr, "epochs": n_epochs, GATE_METRIC: value})
            if best is None or value > best[0]:
                best = (value, lr, n_epochs, state)
    _, lr, n_epochs, state = best
    probe.load_state_dict(state)
    x_rep, y_rep = data[REPORT_SUBSET]
    probs = probe_logits(probe, x_rep)
    choice = {
        "lr": lr,
        "epochs": n_epochs,
        # A choice on the grid's edge says the grid should be wider.
        "at_grid_edge": lr in (min(lrs), max(lrs)) or n_epochs == max(epochs),
        "synth_val_grid": grid,
        "synth_val": frame_metrics(probe_logits(probe, x_sel), y_sel),
        "validation": frame_metrics(probs, y_rep),
    }
    return choice, probs


# ----------------------------------------------------------------------
# Data, encoders and features


def load_split(prep, subsets, classes):
    """The clips of ``subsets`` (prepared manifests): ``[(id, entry)]``."""
    from speechbrain_sed_condmix.dataio.prep import load_manifest

    clips = []
    for subset in subsets:
        path = Path(prep) / f"{subset}.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no such manifest (run the preparation)")
        clips.extend(sorted(load_manifest(path).items()))
    return clips


def label_encoder(classes):
    """Frame labels on the encoder's 40 ms tokens (250 per 10 s)."""
    from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder

    return FrameLabelEncoder(
        classes,
        audio_duration=CLIP_SECONDS,
        sample_rate=SAMPLE_RATE,
        hop_length=HOP,
        pooling=PATCH_FRAMES,
    )


def frame_targets(clips, encoder):
    """``[N, T, C]`` frame labels of ``clips``."""

    return torch.stack(
        [
            encoder.encode_strong(entry["events"], entry["duration"]).T
            for _, entry in clips
        ]
    )


def build_encoders(seed, flags, ckpt, workdir):
    """The frontend and the two frozen encoders of one seed.

    The YAML is loaded with the run's seed and shape flags, as
    ``train.py`` loads it, so its ``encoder`` is the initialisation the
    pretraining started from (``random``); a copy gets the checkpoint's
    teacher encoder (``pretrained``; with ``ckpt=None`` a plain copy).
    """
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_sed_condmix.lobes.atst import load_atst_checkpoint

    overrides = {"seed": seed, "data_folder": "unused"}
    overrides["output_folder"] = str(workdir)
    for flag in flags:
        key, _, value = flag.lstrip("-").partition("=")
        if key in SHAPE_FLAGS:
            overrides[key] = int(value)
    with open(PRETRAIN_YAML, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    random_encoder = hparams["encoder"]
    pretrained = copy.deepcopy(random_encoder)
    if ckpt is not None:
        load_atst_checkpoint(pretrained, ckpt)
    encoders = {"pretrained": pretrained, "random": random_encoder}
    for encoder in encoders.values():
        encoder.eval().requires_grad_(False)
    return hparams["frontend"].eval(), encoders


def extract_features(frontend, encoder, clips, device, batch_clips=16):
    """``[N, 250, D]`` frame embeddings of ``clips`` (10 s, zero-padded)."""
    import soundfile as sf
    from tqdm import tqdm

    length = int(CLIP_SECONDS * SAMPLE_RATE)
    frontend, encoder = frontend.to(device), encoder.to(device)
    out = []
    for start in tqdm(
        range(0, len(clips), batch_clips), desc="features", leave=False
    ):
        waves = torch.zeros(len(clips[start : start + batch_clips]), length)
        for row, (_, entry) in enumerate(clips[start : start + batch_clips]):
            wav, rate = sf.read(entry["wav"], dtype="float32", always_2d=True)
            if rate != SAMPLE_RATE:
                raise SystemExit(
                    f"{entry['wav']}: {rate} Hz, the probe expects "
                    f"{SAMPLE_RATE} (the prepared cache)"
                )
            wav = torch.from_numpy(wav.mean(1))[:length]
            waves[row, : len(wav)] = wav
        with torch.no_grad():
            out.append(encoder(frontend(waves.to(device))).cpu())
    return torch.cat(out)


def sed_metrics(probs, clips, prep, subset, classes):
    """PSDS1, PSDS2 and intersection F1 of raw frame probabilities."""
    from speechbrain_sed_condmix.metrics import compute_sed_metrics
    from speechbrain_sed_condmix.scores import frame_scores_to_dataframe

    frame = PATCH_FRAMES * HOP / SAMPLE_RATE
    scores = {
        clip_id: frame_scores_to_dataframe(
            p.numpy(), classes, frame_duration=frame, duration=e["duration"]
        )
        for (clip_id, e), p in zip(clips, probs)
    }
    prep = Path(prep)
    result = compute_sed_metrics(
        scores,
        prep / f"{subset}_gt.tsv",
        prep / f"{subset}_durations.tsv",
    )
    return {k: float(result[k]) for k in ("psds1", "psds2", "intersection_f1")}


def probe_seed(seed, flags, ckpt, prep, device, workdir):
    """Stage B of one seed: both encoders' probe choices and metrics."""

    from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES

    torch.manual_seed(seed)
    classes = list(DESED_CLASSES)
    labels = label_encoder(classes)
    splits = {
        "train": load_split(prep, TRAIN_SUBSETS, classes),
        SELECT_SUBSET: load_split(prep, [SELECT_SUBSET], classes),
        REPORT_SUBSET: load_split(prep, [REPORT_SUBSET], classes),
    }
    targets = {k: frame_targets(v, labels) for k, v in splits.items()}
    frontend, encoders = build_encoders(seed, flags, ckpt, workdir)
    result = {
        "clips": {k: len(v) for k, v in splits.items()},
        "encoders": {},
        "validation": {},
    }
    for name, encoder in encoders.items():
        start = time.perf_counter()
        data = {
            split: (
                extract_features(frontend, encoder, clips, device),
                targets[split],
            )
            for split, clips in splits.items()
        }
        choice, probs = select_and_score(data, seed)
        metrics = dict(choice["validation"])
        metrics.update(
            sed_metrics(
                probs, splits[REPORT_SUBSET], prep, REPORT_SUBSET, classes
            )
        )
        result["validation"][name] = metrics
        choice["wall_seconds"] = round(time.perf_counter() - start, 1)
        result["encoders"][name] = choice
    return result


# ----------------------------------------------------------------------
# Pretraining runs (stage A) and the per-seed records


def merge_flags(base, extra):
    """``base`` recipe flags with ``extra`` replacing those of its names.

    Example
    -------
    >>> merge_flags(["--a=1", "--b=2"], ["--b=3", "--c=4"])
    ['--a=1', '--b=3', '--c=4']
    """
    names = {flag.partition("=")[0] for flag in extra}
    kept = [f for f in base if f.partition("=")[0] not in names]
    return kept + list(extra)


def pretrain_command(seed, pool, folder, flags, device):
    """The recipe command of one pretraining run."""
    return [
        sys.executable,
        str(RECIPE / "train.py"),
        str(PRETRAIN_YAML),
        f"--data_folder={pool}",
        f"--output_folder={folder}",
        f"--seed={seed}",
        f"--device={device}",
        *flags,
    ]


def pretrain_done(folder):
    """Whether the pretraining run in ``folder`` finished (its marker)."""
    return (Path(folder) / "pretrain_done.json").is_file()


def loss_curve(train_log):
    """``[{epoch, steps, loss, lr, ...}]`` from a pretraining train_log.

    Example
    -------
    >>> p = getfixture("tmp_path") / "train_log.txt"
    >>> _ = p.write_text("epoch: 1, steps: 12 - train loss: 1.29, "
    ...                  "train lr: 9.20e-04\\n")
    >>> loss_curve(p)
    [{'epoch': 1, 'steps': 12, 'loss': 1.29, 'lr': 0.00092}]
    """
    curve = []
    path = Path(train_log)
    if not path.is_file():
        return curve
    for line in path.read_text().splitlines():
        meta, sep, stats = line.partition(" - ")
        if not sep:
            continue
        row = {}
        for item in meta.split(", "):
            key, _, value = item.partition(": ")
            row[key] = int(value)
        for item in stats.split(", "):
            key, _, value = item.partition(": ")
            row[key.replace("train ", "")] = float(value)
        curve.append(row)
    return curve


def run_pretraining(seed, pool, folder, flags, device, threads):
    """Run (or resume) one pretraining; return its status line."""
    folder = Path(folder)
    if pretrain_done(folder):
        return "skipped (finished)"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = pretrain_command(seed, pool, folder, flags, device)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": str(REPO),
    }
    start = time.perf_counter()
    with open(folder / "stdout.txt", "a") as log:
        done = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - start
    # Wall time of every part of a run (a resumed run has several).
    with open(folder / "wall_seconds.txt", "a") as fout:
        fout.write(f"{seconds:.1f}\n")
    if done.returncode == 75:
        return "stopped (checkpointed; the same command resumes it)"
    if done.returncode:
        return f"failed (exit {done.returncode}, see {folder}/stdout.txt)"
    (folder / "pretrain_done.json").write_text(
        json.dumps({"command": cmd[1:], "seed": seed}, indent=1) + "\n"
    )
    return f"done in {seconds / 60:.1f} min"


def wall_seconds(folder):
    """Summed wall time of a run's parts (``wall_seconds.txt``)."""
    path = Path(folder) / "wall_seconds.txt"
    if not path.is_file():
        return None
    return round(sum(float(v) for v in path.read_text().split()), 1)


def record_key(scale, unlabeled, flags):
    """A hash of everything a seed's record depends on."""
    src = json.dumps(
        [
            scale,
            unlabeled,
            flags,
            PROBE_LRS,
            PROBE_EPOCHS,
            PROBE_BATCH,
            TRAIN_SUBSETS,
            CLIP_SECONDS,
        ]
    )
    return hashlib.sha1(src.encode()).hexdigest()[:10]


def record_path(records, key, seed):
    """The record file of one seed."""
    return Path(records) / key / f"{seed}.json"


def plan_seed(records, key, seed, run_folder):
    """What a seed still needs: ``"recorded"`` (skip), ``"probe"``
    (pretraining finished) or ``"pretrain"`` (run or resume it first).

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> plan_seed(root / "rec", "k", 1, root / "run")
    'pretrain'
    """
    if record_path(records, key, seed).is_file():
        return "recorded"
    if pretrain_done(run_folder):
        return "probe"
    return "pretrain"


def load_records(records, key):
    """The committed seed records under ``key``."""
    folder = Path(records) / key
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# ----------------------------------------------------------------------
# Report


def plot_loss_curves(records, path):
    """Per-epoch pretraining loss of every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in records:
        curve = r["pretraining"]["loss_curve"]
        ax.plot(
            [c["steps"] for c in curve],
            [c["loss"] for c in curve],
            marker="o",
            label=f"seed {r['seed']}",
        )
    ax.set_xlabel("optimiser steps")
    ax.set_ylabel("mean train loss of the epoch (2 - 2 cos)")
    ax.set_title("ATST-Frame pretraining on mini-DESED (generated audio)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_paired(summary, path):
    """Paired differences per metric (points) with mean +- 2 SE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, metric in enumerate(METRICS):
        stats = summary["paired"][metric]
        ax.scatter([i] * stats["n"], stats["diffs"], color="grey", s=12)
        if stats.get("se") is not None:
            ax.errorbar(
                i + 0.15,
                stats["mean"],
                yerr=2 * stats["se"],
                fmt="o",
                capsize=4,
            )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(METRICS)), METRICS, rotation=20)
    ax.set_ylabel("pretrained - random (validation)")
    ax.set_title("Linear probe, paired by seed: mean +- 2 SE")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(records, name, key, settings, folder=MEASURED):
    """Write ``<folder>/<name>.json`` and its two PNGs."""
    summary = summarise(records)
    folder = Path(folder)
    path = folder / f"{name}.json"
    out = {
        "what": (
            "Linear probe on frozen ATST-Frame frame embeddings: the "
            "teacher encoder of a pretraining run (pretrained) against the "
            "same initialisation untrained (random), paired by seed. "
            "mini-DESED is generated audio, not DESED."
        ),
        "key": key,
        "settings": settings,
        # The verdict that benchmarks/pretrain_ablation.py reads before it
        # runs any stage-2 arm.
        "gate_passed": bool(summary["gate"]["passes"]),
        **summary,
        "runs": records,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    plot_loss_curves(records, folder / f"{name}_loss.png")
    plot_paired(summary, folder / f"{name}.png")
    gate = summary["gate"]
    print(json.dumps(gate, indent=1))
    print(f"written: {path}", file=sys.stderr)
    return out


# ----------------------------------------------------------------------
# CLI


def build_parser():
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder")
    parser.add_argument("--scale", default="ssl", help="mini-DESED scale")
    parser.add_argument(
        "--unlabeled", type=int, default=8000, help="unlabeled pool size"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--records", type=Path, default=RECORDS, help="per-seed records"
    )
    parser.add_argument(
        "--report", action="store_true", help="only gather the records"
    )
    parser.add_argument(
        "--report_dir",
        type=Path,
        default=MEASURED,
        help="where --report writes its JSON and PNGs",
    )
    parser.add_argument(
        "--pretrain_flag",
        action="append",
        default=[],
        help="extra recipe flag (repeatable), e.g. --pretrain_flag="
        "--number_of_epochs=40; it joins the record key",
    )
    return parser


def prepare_data(out, scale, unlabeled):
    """Generate the mini-DESED (once) and prepare its labelled subsets."""
    from speechbrain_sed_condmix.dataio.desed import prepare_desed
    from speechbrain_sed_condmix.dataio.synth import generate_mini_desed

    data = out / f"mini_desed_{scale}_{unlabeled}"
    generate_mini_desed(data, scale=scale, seed=0, unlabeled=unlabeled)
    prep = out / "prep"
    # The probe reads only the strong subsets: the pool is not resampled.
    prepare_desed(
        data, prep, subsets=(*TRAIN_SUBSETS, SELECT_SUBSET, REPORT_SUBSET)
    )
    return data / "audio/train/unlabel_in_domain", prep


def main(argv=None):
    """Run the missing seeds (stage A then B), or ``--report``."""
    args = build_parser().parse_args(argv)
    flags = merge_flags(PRETRAIN_FLAGS, args.pretrain_flag)
    key = record_key(args.scale, args.unlabeled, flags)
    name = f"pretrain_probe_{args.scale}_{args.unlabeled}"
    settings = {
        "scale": args.scale,
        "unlabeled": args.unlabeled,
        "pretrain_flags": flags,
        "probe": {
            "lrs": PROBE_LRS,
            "epochs": PROBE_EPOCHS,
            "batch_frames": PROBE_BATCH,
            "optimiser": "Adam, BCE with logits, standardised features",
            "selection": f"{SELECT_SUBSET} {GATE_METRIC}, per encoder",
            "train": TRAIN_SUBSETS,
            "report": REPORT_SUBSET,
        },
        "seeds": "pretraining seeds (also the random init and probe seeds)",
    }
    if args.report:
        records = load_records(args.records, key)
        if not records:
            raise SystemExit(f"no records under {args.records / key}")
        report(records, name, key, settings, args.report_dir)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    plans = {
        s: plan_seed(args.records, key, s, args.out / "pretrain" / str(s))
        for s in args.seeds
    }
    if all(p == "recorded" for p in plans.values()):
        print("every seed is recorded; --report gathers them")
        return 0
    pool, prep = prepare_data(args.out, args.scale, args.unlabeled)
    failed = 0
    for seed, plan in plans.items():
        folder = args.out / "pretrain" / str(seed)
        stamp = time.strftime("%H:%M:%S")
        if plan == "recorded":
            print(f"{stamp} seed {seed}: skipped (recorded)", flush=True)
            continue
        status = run_pretraining(
            seed, pool, folder, flags, args.device, args.threads
        )
        print(f"{stamp} seed {seed} pretraining: {status}", flush=True)
        if not pretrain_done(folder):
            failed += 1
            continue
        start = time.perf_counter()
        result = probe_seed(
            seed,
            flags,
            folder / "atst_frame_pretrain.ckpt",
            prep,
            args.device,
            args.out / "probe_work",
        )
        curve = loss_curve(folder / "train_log.txt")
        record = {
            "seed": seed,
            "key": key,
            "pretraining": {
                "command": pretrain_command(
                    seed, pool, folder, flags, args.device
                )[1:],
                "steps": curve[-1]["steps"] if curve else None,
                "epochs": curve[-1]["epoch"] if curve else None,
                "wall_seconds": wall_seconds(folder),
                "loss_curve": curve,
            },
            "probe_wall_seconds": round(time.perf_counter() - start, 1),
            "device": args.device,
            **result,
        }
        path = record_path(args.records, key, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} seed {seed} probe: recorded in {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
