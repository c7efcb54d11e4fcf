"""Import a released checkpoint as a detector folder (``sed-import``).

Two kinds of PyTorch Lightning checkpoints are understood:

* ``desed-crnn``: the DCASE 2023 Task 4 baseline CRNN of DESED_task
  (github.com/DCASE-REPO/DESED_task, recipe ``dcase2023_task4_baseline``),
  weights under ``state_dict`` with the prefixes ``sed_student.`` and
  ``sed_teacher.``;
* ``atst-sed``: an ATST-SED stage-2 checkpoint
  (github.com/Audio-WestlakeU/ATST-SED), the same prefixes over the CNN,
  ``cat_tf``, BiGRU, heads and ``atst_frame.atst.<ATST-Frame keys>``.

:func:`import_release` writes the same folder as ``sed-export`` (see
:mod:`speechbrain_sed_condmix.model_folder`), recording what the reference
does at inference:

* its front end and normalisation as trained: the CNN's magnitude log-mel
  with the per-clip (instance) min-max scaler, and for ATST-SED the ATST
  power mel with the 80 dB floor. The reference takes that floor over the
  batch, which on one clip is the clip's own maximum; the detector batches
  windows, so the floor is recorded per clip (``per_clip_top_db``), which
  is the reference's value for every window run alone;
* the release's class order (the 10 DESED classes, alphabetical);
* its post-processing: a median filter of 7 frames for the CRNN, the
  class-wise lengths [6, 20, 7, 4, 7, 6, 6, 6, 6, 6] for ATST-SED, and
  threshold 0.5.

The teacher is imported by default, as both references deploy it. The
architecture is read off the tensor shapes (filters, GRU size and layers,
classes, ATST width and depth); ATST-Frame's heads are taken as 64-wide
(12 for the base model, 6 for the small one), which shapes cannot tell.
Long recordings are cut into windows as for any detector folder (centred
windows); the references' own scripts cut 10 s windows differently (for
ATST-SED, every 3 s with the decisions OR-ed).

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import datetime
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from speechbrain_sed_condmix.dataio import layout
from speechbrain_sed_condmix.model_folder import (
    DEFAULT_SILENCE_PEAK,
    YAML_HEADER,
    check_and_write,
    dump_yaml,
    model_card_text,
    sha256_of,
    tagged_map,
)
from speechbrain_sed_condmix.postprocessing import PostProcessing
from speechbrain_sed_condmix.safe_load import (
    CheckpointLoadError,
    load_checkpoint,
)

logger = logging.getLogger(__name__)

#: The DESED classes in the order of both releases' encoders (the
#: alphabetical order of the DESED preparation).
DESED_CLASSES = list(layout.DESED_CLASSES)

#: CNN pooling (time, frequency) of both references' 7 blocks.
REFERENCE_POOLING = [[2, 2], [2, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]]

#: ATST-SED stage-2 median filter lengths (frames), in class order.
ATST_SED_MEDIAN = [6, 20, 7, 4, 7, 6, 6, 6, 6, 6]

#: What each kind reproduces, for the card and the README.
RELEASES = {
    "desed-crnn": {
        "title": "DCASE 2023 Task 4 baseline CRNN (DESED_task)",
        "project": "github.com/DCASE-REPO/DESED_task "
        "(recipes/dcase2023_task4_baseline)",
        "median_filter": 7,
    },
    "atst-sed": {
        "title": "ATST-SED stage 2 (CNN + ATST-Frame)",
        "project": "github.com/Audio-WestlakeU/ATST-SED",
        "median_filter": ATST_SED_MEDIAN,
    },
}

PREFIXES = {"student": "sed_student.", "teacher": "sed_teacher."}

#: ATST-Frame attention head width (ViT convention; base 768 / 12 heads).
ATST_HEAD_DIM = 64

_MAX_KEYS_SHOWN = 12


ATST_NOTE = (
    "# The front end and post-processing are the reference's. ATST-SED\n"
    "# floors the ATST dB 80 below the batch maximum; on the one clip its\n"
    "# detector sees at a time that is the clip's own maximum, recorded as\n"
    "# per_clip_top_db because this detector batches windows.\n"
)


class ReleaseCheckpointError(ValueError):
    """A file that is not a usable release checkpoint of the kind asked."""


def _show(keys):
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    if len(keys) > _MAX_KEYS_SHOWN:
        shown += f", ... ({len(keys) - _MAX_KEYS_SHOWN} more)"
    return f"{len(keys)} [{shown}]"


def read_checkpoint(path, trust_checkpoint=False):
    """Read a checkpoint file, tensors only unless it is trusted.

    Arguments
    ---------
    path : str or pathlib.Path
        The file.
    trust_checkpoint : bool
        Allow Python objects other than tensors (unpickling runs code from
        the file): only for files from a source you trust.

    Returns
    -------
    object
        What the file holds.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ReleaseCheckpointError
        When it is empty, truncated, not a PyTorch file, or holds objects
        that need ``trust_checkpoint``; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ReleaseCheckpointError(f"{path}: the file is empty (0 bytes)")
    try:
        # The project's one checkpoint reader: weights and plain values
        # (Lightning's hyper-parameters included) load without running code
        # from the file; anything else needs --trust-checkpoint.
        return load_checkpoint(
            path,
            trust_checkpoint=trust_checkpoint,
            opt_in="--trust-checkpoint (trust_checkpoint=True)",
        )
    except CheckpointLoadError as err:
        raise ReleaseCheckpointError(str(err)) from None


def release_state_dict(checkpoint, source, kind, weights="teacher"):
    """The bare model state dict of one of a release's two models.

    Arguments
    ---------
    checkpoint : Mapping
        What :func:`read_checkpoint` returned.
    source : str
        File name for messages.
    kind : str
        ``"desed-crnn"`` or ``"atst-sed"``.
    weights : str
        ``"teacher"`` or ``"student"``.

    Returns
    -------
    dict
        Prefix removed; profiler counters (``total_ops``,
        ``total_params``) dropped. Without ``state_dict``, the top-level
        ``sed_teacher`` / ``sed_student`` dicts that ATST-SED also saves.

    Example
    -------
    >>> ckpt = {"state_dict": {"sed_teacher.dense.bias": torch.zeros(2),
    ...                        "sed_student.dense.bias": torch.ones(2),
    ...                        "mel_spec.fb": torch.zeros(3)}}
    >>> release_state_dict(ckpt, "x.ckpt", "desed-crnn")
    {'dense.bias': tensor([0., 0.])}
    >>> release_state_dict({"sed_teacher": {"dense.bias": torch.ones(1)}},
    ...                    "y.ckpt", "atst-sed")
    {'dense.bias': tensor([1.])}
    """
    if not isinstance(checkpoint, Mapping):
        raise ReleaseCheckpointError(
            f"{source}: not a Lightning checkpoint (a "
            f"{type(checkpoint).__name__}, not a dict with 'state_dict')"
        )
    state = checkpoint.get("state_dict")
    bare = checkpoint.get(f"sed_{weights}")
    if not isinstance(state, Mapping) and isinstance(bare, Mapping):
        # ATST-SED's on_save_checkpoint also keeps each model's weights
        # unprefixed at the top level; a file may hold only those.
        state = {PREFIXES[weights] + k: v for k, v in bare.items()}
    if not isinstance(state, Mapping):
        raise ReleaseCheckpointError(
            f"{source}: not a Lightning checkpoint: no 'state_dict' entry "
            f"(top-level keys: {_show(map(str, checkpoint))})"
        )
    prefix = PREFIXES[weights]
    found = sorted({k.split(".", 1)[0] + "." for k in state if "." in k})
    if prefix not in found:
        raise ReleaseCheckpointError(
            f"{source}: no '{prefix}' weights, so not a {kind} release "
            f"checkpoint (prefixes found: {found})"
        )
    return {
        key[len(prefix) :]: value
        for key, value in state.items()
        if key.startswith(prefix)
        and not key.endswith(("total_ops", "total_params"))
    }


def _count(state, pattern):
    count = 0
    while pattern.format(count) in state:
        count += 1
    return count


def _shape(state, key, dim, default):
    value = state.get(key)
    if isinstance(value, torch.Tensor) and value.dim() > dim:
        return int(value.shape[dim])
    return default


def model_node(kind, state):
    """The ``model`` YAML node of a release, sized from its tensors.

    Arguments
    ---------
    kind : str
        ``"desed-crnn"`` or ``"atst-sed"``.
    state : dict
        Bare state dict (:func:`release_state_dict`).

    Returns
    -------
    ruamel.yaml.comments.CommentedMap
        A tagged node for ``hyperparams.yaml``.
    """
    blocks = _count(state, "cnn.cnn.conv{}.weight") or 7
    filters = [
        _shape(state, f"cnn.cnn.conv{i}.weight", 0, 128) for i in range(blocks)
    ]
    if blocks != len(REFERENCE_POOLING):
        raise ReleaseCheckpointError(
            f"{blocks} CNN blocks; the {kind} releases have "
            f"{len(REFERENCE_POOLING)}"
        )
    gate = "cg" if "cnn.cnn.cg0.linear.weight" in state else "glu"
    if kind == "atst-sed" and "cnn.cnn.glu0.linear.weight" not in state:
        gate = "cg"
    common = {
        "n_class": _shape(state, "dense.weight", 0, len(DESED_CLASSES)),
        "n_filters": filters,
        "pooling": REFERENCE_POOLING,
        "rnn_hidden": _shape(state, "rnn.rnn.weight_hh_l0", 1, 128),
        "rnn_layers": _count(state, "rnn.rnn.weight_hh_l{}") or 2,
        "dropout": 0.5,
        "activation": gate,
        "attention": "dense_softmax.weight" in state,
    }
    if kind == "desed-crnn":
        return tagged_map(
            "!new:speechbrain_sed_condmix.lobes.crnn.CRNN", common
        )
    prefix = "atst_frame.atst."
    dim = _shape(state, prefix + "pos_embed", 2, 768)
    atst = {
        "embed_dim": dim,
        "depth": _count(state, prefix + "blocks.{}.norm1.weight") or 12,
        "num_heads": max(dim // ATST_HEAD_DIM, 1),
        "mlp_ratio": _shape(
            state, prefix + "blocks.0.mlp.fc1.weight", 0, 4 * dim
        )
        / dim,
        "max_tokens": _shape(state, prefix + "pos_embed", 1, 251) - 1,
    }
    return tagged_map(
        "!new:speechbrain_sed_condmix.lobes.atst_sed.ATSTSED",
        {
            "atst": tagged_map(
                "!new:speechbrain_sed_condmix.lobes.atst.ATSTFrame", atst
            ),
            **common,
            "fusion_size": _shape(state, "cat_tf.weight", 0, 128),
        },
    )


def _cnn_frontend():
    return tagged_map(
        "!new:speechbrain_sed_condmix.lobes.features.CNNMelFrontEnd",
        {
            "sample_rate": 16000,
            "n_fft": 2048,
            "win_length": 2048,
            "hop_length": 256,
            "n_mels": 128,
            "f_min": 0.0,
            "f_max": 8000.0,
            "amin": 1.0e-5,
            "db_clamp": [-50.0, 80.0],
        },
    )


def frontend_node(kind):
    """The reference front end of a release, every setting written out.

    Arguments
    ---------
    kind : str
        ``"desed-crnn"`` or ``"atst-sed"``.

    Returns
    -------
    ruamel.yaml.comments.CommentedMap
        A tagged node for ``hyperparams.yaml``.
    """
    if kind == "desed-crnn":
        return _cnn_frontend()
    atst = tagged_map(
        "!new:speechbrain_sed_condmix.lobes.features.ATSTMelFrontEnd",
        {
            "sample_rate": 16000,
            "n_fft": 1024,
            "win_length": 1024,
            "hop_length": 160,
            "n_mels": 64,
            "f_min": 60.0,
            "f_max": 7800.0,
            "top_db": 80.0,
            "db_clamp": [-50.0, 80.0],
            "scale": [-79.6482, 50.6842],
            # The reference's batch-wide floor, on one clip at a time.
            "per_clip_top_db": True,
        },
    )
    return tagged_map(
        "!new:speechbrain_sed_condmix.lobes.features.DualMelFrontEnd",
        {"cnn": _cnn_frontend(), "atst": atst},
    )


def _encoder_node():
    return tagged_map(
        "!new:speechbrain_sed_condmix.dataio.encoder.FrameLabelEncoder",
        {
            "classes": list(DESED_CLASSES),
            "audio_duration": 10.0,
            "sample_rate": 16000,
            "hop_length": 256,
            "pooling": 4,
        },
    )


def _check_layout(kind, state, model, source, weights):
    """Missing, unexpected and mis-shaped keys, all in one message."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        hint = ""
        if kind == "desed-crnn" and any("atst_frame." in k for k in state):
            hint = " It looks like an ATST-SED checkpoint: sed-import atst-sed."
        elif kind == "atst-sed" and not any("atst_frame." in k for k in state):
            hint = " It has no ATST-Frame weights: sed-import desed-crnn?"
        raise ReleaseCheckpointError(
            f"{source}: the {weights} weights do not have the {kind} layout."
            f" Missing keys: {_show(missing)}. Unexpected keys: "
            f"{_show(unexpected)}.{hint}"
        )
    bad = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise ReleaseCheckpointError(
            f"{source}: tensor shapes differ from the {kind} layout: "
            + "; ".join(bad[:_MAX_KEYS_SHOWN])
        )


def import_release(
    kind,
    checkpoint,
    out_folder,
    weights="teacher",
    median_filter=None,
    trust_checkpoint=False,
    window_hop=None,
    batch_size=8,
    overwrite=False,
    license="unknown",
):
    """Turn a released checkpoint into a detector folder.

    Arguments
    ---------
    kind : str
        ``"desed-crnn"`` or ``"atst-sed"``.
    checkpoint : str or pathlib.Path
        The released ``.ckpt`` file.
    out_folder : str or pathlib.Path
        Folder to write.
    weights : str
        ``"teacher"`` (default, as the references deploy) or ``"student"``.
    median_filter : int or list of int, optional
        Median filter length(s) in frames instead of the reference's.
    trust_checkpoint : bool
        Read Python objects besides tensors (runs code from the file).
    window_hop : float, optional
        Seconds between the windows of long files (default 5 s).
    batch_size : int
        Windows per forward pass.
    overwrite : bool
        Replace existing files.
    license : str
        Licence of the weights, for the model card (see the releasing
        project).

    Returns
    -------
    pathlib.Path
        ``out_folder``.

    Example
    -------
    >>> import_release(  # doctest: +SKIP
    ...     "desed-crnn", "baseline.ckpt", "models/dcase23_crnn")
    """
    from speechbrain_sed_condmix.model_folder import load_yaml_text

    if kind not in RELEASES:
        raise ValueError(f"kind must be one of {sorted(RELEASES)}: {kind!r}")
    if weights not in PREFIXES:
        raise ValueError(f"weights must be teacher or student: {weights!r}")
    path = Path(checkpoint)
    ckpt = read_checkpoint(path, trust_checkpoint)
    state = release_state_dict(ckpt, str(path), kind, weights)
    model = model_node(kind, state)
    n_class = int(model["n_class"])
    if n_class != len(DESED_CLASSES):
        raise ReleaseCheckpointError(
            f"{path}: {n_class} output classes; the {kind} release has the "
            f"{len(DESED_CLASSES)} DESED classes"
        )
    built = load_yaml_text(dump_yaml({"model": model}))["model"]
    _check_layout(kind, state, built, str(path), weights)
    release = RELEASES[kind]
    lengths = (
        release["median_filter"] if median_filter is None else median_filter
    )
    if isinstance(lengths, (list, tuple)) and len(lengths) == 1:
        lengths = lengths[0]
    postprocessing = PostProcessing(
        DESED_CLASSES,
        median_filter=lengths,
        threshold=0.5,
        info={
            "tuned": "no: the reference's median filter, threshold 0.5"
            if median_filter is None
            else "no: median filter set at import, threshold 0.5"
        },
    )
    window_hop = 5.0 if window_hop is None else float(window_hop)
    if not 0 < window_hop <= 10.0:
        raise ValueError("window_hop must be in (0, 10] s")
    size, digest = path.stat().st_size, sha256_of(path)
    info = {
        "kind": kind,
        "release": release["title"],
        "source_file": path.name,
        "source_size": size,
        "source_sha256": digest,
        "weights": weights,
        "date": datetime.date.today().isoformat(),
    }
    from speechbrain_sed_condmix.model_folder import detector_tree

    tree = detector_tree(
        _encoder_node(),
        frontend_node(kind),
        model,
        postprocessing,
        window_hop,
        batch_size,
        DEFAULT_SILENCE_PEAK,
        "import_info",
        info,
    )
    text = YAML_HEADER.format(how=f"sed-import {kind}")
    text += ATST_NOTE if kind == "atst-sed" else ""
    text += dump_yaml(tree)

    def card(loaded, config_hash, model_sha256, folder):
        """The model card of the imported folder (Markdown)."""
        source = [
            f"- released by: {release['project']}",
            f"- file: `{path.name}`, {size} bytes, sha256 `{digest}`",
            f"- weights: the {weights} of the checkpoint",
            "- training data: as documented by the releasing project "
            "(DESED); no metrics were computed at import",
        ]
        return model_card_text(
            loaded,
            folder,
            f"{release['title']}, imported",
            source,
            config_hash,
            model_sha256,
            license=license,
        )

    out = check_and_write(
        out_folder,
        text,
        state,
        f"the {weights} weights of {path}",
        card=card,
        overwrite=overwrite,
    )
    logger.info("Imported the %s of %s to %s", weights, path, out.resolve())
    return out
