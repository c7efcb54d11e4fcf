"""The detector folder: its files, its YAML and its model card.

``sed-export`` (:mod:`speechbrain_sed_condmix.export`) and ``sed-import``
(:mod:`speechbrain_sed_condmix.importing`) both write a SpeechBrain source
folder that :class:`~speechbrain_sed_condmix.inference.SoundEventDetector`
loads with ``from_hparams``:

* ``hyperparams.yaml``: ``encoder`` (label grid and classes), ``frontend``,
  ``model``, ``modules``, a ``pretrainer`` that loads ``model.ckpt``, the
  windowing (``window_hop``, ``batch_size``, ``silence_peak``),
  ``postprocessing`` and a provenance record (``export_info`` or
  ``import_info``);
* ``model.ckpt``: the network's plain state dict;
* ``README.md``: the model card (:func:`model_card_text`): classes, front
  end, post-processing, where the weights come from, package version,
  licence, the ``sed-detect`` command, and the sha256s of
  ``hyperparams.yaml`` and ``model.ckpt`` (``config_sha256``,
  ``model_sha256``). A folder without a card loads, with a warning.

Loading a folder (:func:`~speechbrain_sed_condmix.folder_check.check_folder`)
first checks its files against
the card's ``config_sha256`` and ``model_sha256``, then the YAML against
the allow-list of :mod:`speechbrain_sed_condmix.safe_yaml`, before
anything in it is built. The writers here check the same list before
writing (:func:`load_yaml_text`).

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import copy
import hashlib
import io
import logging
from pathlib import Path

import torch

from speechbrain_sed_condmix.safe_yaml import check_yaml

logger = logging.getLogger(__name__)

#: Model weights file of a detector folder (SpeechBrain's
#: ``<loadable>.ckpt`` naming, so ``Pretrainer`` finds it by itself).
MODEL_FILE = "model.ckpt"

#: Hyperparameter file of a detector folder.
HPARAMS_FILE = "hyperparams.yaml"

#: Model card of a detector folder.
CARD_FILE = "README.md"

#: Peak amplitude under which a window counts as digital silence
#: (-80 dBFS).
DEFAULT_SILENCE_PEAK = 1e-4


class ModelFileMismatchError(ValueError):
    """``model.ckpt`` is not the file that the model card describes."""


def sha256_of(path, chunk=1 << 20):
    """The sha256 of a file, in hex.

    Arguments
    ---------
    path : str or pathlib.Path
        The file.
    chunk : int
        Bytes read at a time.

    Returns
    -------
    str
        64 hex digits.

    Example
    -------
    >>> path = getfixture("tmp_path") / "x"
    >>> _ = path.write_bytes(b"abc")
    >>> sha256_of(path)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def check_yaml_classes(text, source="hyperparams.yaml"):
    """Refuse a YAML that names targets outside the allow-list.

    See :func:`speechbrain_sed_condmix.safe_yaml.check_yaml` (this is it,
    without the opt-in).

    Arguments
    ---------
    text : str
        The YAML text.
    source : str
        Name used in the message.

    Raises
    ------
    speechbrain_sed_condmix.safe_yaml.UntrustedYAMLError
        Naming the offending keys, lines and tags.

    Example
    -------
    >>> check_yaml_classes("a: !new:speechbrain_sed_condmix.lobes.crnn.CRNN")
    >>> check_yaml_classes("a: !name:os.system")
    Traceback (most recent call last):
    ...
    speechbrain_sed_condmix.safe_yaml.UntrustedYAMLError: hyperparams.yaml...
    """
    check_yaml(text, source)


# ----------------------------------------------------------------------
# YAML trees (ruamel, as hyperpyyaml reads and writes them)


def yaml_parser():
    """A ruamel round-trip parser (keeps the ``!new:`` tags)."""
    import ruamel.yaml

    return ruamel.yaml.YAML()


def copy_node(node):
    """Copy a ruamel node without its comments, keeping tags.

    Arguments
    ---------
    node : object
        A mapping, sequence or scalar of a ruamel tree.

    Returns
    -------
    object
        The copy (flow style for sequences of scalars).
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, dict):
        out = CommentedMap()
        for key, value in node.items():
            out[key] = copy_node(value)
        tag = getattr(node, "tag", None)
        if tag is not None and getattr(tag, "value", None):
            out.yaml_set_ctag(tag)
        return out
    if isinstance(node, (list, tuple)):
        out = CommentedSeq(copy_node(v) for v in node)
        tag = getattr(node, "tag", None)
        if tag is not None and getattr(tag, "value", None):
            out.yaml_set_ctag(tag)
        if all(not isinstance(v, (dict, list, tuple)) for v in node):
            out.fa.set_flow_style()
        return out
    return copy.copy(node)


#: What a training YAML may call to read its class list: the custom-data
#: recipes read a ``classes.txt`` by its absolute path. A detector folder
#: holds the list itself instead (:func:`plain_class_values`).
CLASS_LIST_READERS = frozenset(
    {"speechbrain_sed_condmix.dataio.custom.load_classes"}
)


def _tag_value(node):
    tag = getattr(node, "tag", None)
    return getattr(tag, "value", None) or ""


def _is_plain_list(value):
    """A sequence without a tag whose items are plain scalars."""
    return (
        isinstance(value, (list, tuple))
        and not _tag_value(value)
        and all(isinstance(v, (str, int, float)) for v in value)
    )


def plain_class_values(node, classes):
    """A YAML node with its class list calls resolved to plain data.

    A training YAML may compute its classes and their number
    (``n_class: !apply:len [!apply:...load_classes {classes_file: ...}]``
    in the custom-data recipes). A detector folder must not depend on
    that file, so in a copy of ``node``:

    * a call of a reader on :data:`CLASS_LIST_READERS` becomes
      ``classes`` (the run's classes, which the checkpoint's record and
      the strict weight load check);
    * ``!apply:len`` of a plain list (what is left of it) becomes the
      number of items.

    Anything else is copied as it is (:func:`copy_node`).

    Arguments
    ---------
    node : object
        A ruamel node (mapping, sequence or scalar).
    classes : sequence of str
        The classes, in output order.

    Returns
    -------
    object
        The resolved copy; ``node`` is not changed.

    Example
    -------
    >>> tree = yaml_parser().load(
    ...     "n: !apply:len [!apply:speechbrain_sed_condmix.dataio.custom."
    ...     "load_classes {classes_file: /data/classes.txt}]\\n"
    ...     "names: !apply:speechbrain_sed_condmix.dataio.custom.load_classes"
    ...     " {classes_file: /data/classes.txt}\\n")
    >>> dict(plain_class_values(tree, ["bark", "chime"]))
    {'n': 2, 'names': ['bark', 'chime']}
    """
    tag = _tag_value(node)
    if tag.startswith("!apply:") and tag[7:] in CLASS_LIST_READERS:
        return copy_node([str(c) for c in classes])
    if isinstance(node, dict):
        out = copy_node(node)
        for key, value in node.items():
            out[key] = plain_class_values(value, classes)
        return out
    if isinstance(node, (list, tuple)):
        items = [plain_class_values(v, classes) for v in node]
        if tag == "!apply:len" and len(items) == 1:
            if _is_plain_list(items[0]):
                return len(items[0])
        out = copy_node(node)
        for index, value in enumerate(items):
            out[index] = value
        return out
    return copy_node(node)


def tagged_map(tag, items):
    """A mapping written with a tag, e.g. ``!new:<class>``.

    Arguments
    ---------
    tag : str
        The tag, with its ``!``.
    items : dict
        The keyword arguments.

    Returns
    -------
    ruamel.yaml.comments.CommentedMap
        The tagged mapping (sequences of scalars in flow style).
    """
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.tag import Tag

    out = CommentedMap((k, copy_node(v)) for k, v in items.items())
    out.yaml_set_ctag(Tag(suffix=tag))
    return out


def dump_yaml(tree):
    """HyperPyYAML text of a tree."""
    from hyperpyyaml.core import dump_hyperpyyaml

    stream = io.StringIO()
    dump_hyperpyyaml(tree, stream)
    return stream.getvalue()


def load_yaml_text(text, source="hyperparams.yaml", opt_in=None):
    """Load HyperPyYAML text, after the allow-list check (objects built).

    Arguments
    ---------
    text : str
        The YAML text.
    source : str or pathlib.Path
        Where it comes from, for messages.
    opt_in : str, optional
        The opt-in named when the check refuses (default: none exists on
        this path: it builds only what the package writes).

    Returns
    -------
    dict
        The loaded hyperparameters.
    """
    from hyperpyyaml import load_hyperpyyaml

    check_yaml(
        text,
        source,
        opt_in=opt_in
        or "no opt-in here (this writes only folders that load without trust)",
    )
    return load_hyperpyyaml(text)


def plain_yaml(value):
    """Plain Python values from ruamel scalars and sequences.

    Arguments
    ---------
    value : object
        A ruamel value.

    Returns
    -------
    object
        ``dict``, ``list``, ``bool``, ``int``, ``float`` or the value.

    Example
    -------
    >>> plain_yaml({"a": (1, 2.5)})
    {'a': [1, 2.5]}
    """
    if isinstance(value, dict):
        return {str(k): plain_yaml(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_yaml(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def detector_tree(
    encoder_node,
    frontend_node,
    model_node,
    postprocessing,
    window_hop,
    batch_size,
    silence_peak,
    info_key,
    info,
):
    """The ``hyperparams.yaml`` tree of a detector folder.

    Arguments
    ---------
    encoder_node, frontend_node, model_node : object
        Tagged ruamel nodes of the label grid (its ``classes`` a plain
        list), front end and network. Class list reads and their
        ``len`` are written as plain data (:func:`plain_class_values`).
    postprocessing : PostProcessing
        Stored post-processing.
    window_hop : float
        Seconds between the windows of long files.
    batch_size : int
        Windows per forward pass.
    silence_peak : float
        Peak amplitude under which a window is silence.
    info_key : str
        ``"export_info"`` or ``"import_info"``.
    info : dict
        Provenance, plain values.

    Returns
    -------
    dict
        The tree, for :func:`dump_yaml`.
    """
    from hyperpyyaml.core import RefTag

    classes = encoder_node["classes"]
    if not _is_plain_list(classes):
        raise ValueError(
            "encoder.classes of a detector folder must be a plain list of "
            f"names, not {classes!r}"
        )
    # Self-contained: no value is computed from a file of the training run.
    return {
        "sample_rate": int(encoder_node["sample_rate"]),
        "encoder": plain_class_values(encoder_node, classes),
        "frontend": plain_class_values(frontend_node, classes),
        "model": plain_class_values(model_node, classes),
        "modules": {
            "frontend": RefTag("<frontend>"),
            "model": RefTag("<model>"),
        },
        "pretrainer": tagged_map(
            "!new:speechbrain.utils.parameter_transfer.Pretrainer",
            {"loadables": {"model": RefTag("<model>")}},
        ),
        # Causal models (lobes.causal) stream with carried state.
        "causal": bool(model_node.get("causal", False)),
        "window_hop": float(window_hop),
        "batch_size": int(batch_size),
        "silence_peak": float(silence_peak),
        "postprocessing": postprocessing.to_dict(),
        info_key: info,
    }


YAML_HEADER = (
    "# SoundEventDetector model folder written by speechbrain_sed_condmix\n"
    "# ({how}). Load it with\n"
    "#   SoundEventDetector.from_hparams(source=<this folder>, savedir=...)\n"
    "# or run: sed-detect FILES --model <this folder>\n"
    "# window_hop: seconds between the windows of long files;\n"
    "# silence_peak: peak amplitude under which a window is silence;\n"
    "# postprocessing: median filter (frames) and thresholds, or cSEBB\n"
    "# (needs the optional sebbs package); null merge thresholds are off.\n"
)


def check_and_write(out, text, state, what, card=None, overwrite=False):
    """Check a detector folder's YAML and weights, then write the folder.

    The YAML must build only this package's and SpeechBrain's classes; it
    is loaded, the weights are loaded into its model strictly and its
    post-processing is parsed, all before anything is written.

    Arguments
    ---------
    out : str or pathlib.Path
        Folder to write (created).
    text : str
        ``hyperparams.yaml`` text.
    state : dict
        The model's state dict.
    what : str
        What the weights are, for error messages.
    card : callable, optional
        ``card(loaded_hparams, config_hash, model_sha256, folder) -> str``:
        the
        model card text (README.md); None writes no card.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    from speechbrain_sed_condmix.postprocessing import PostProcessing

    loaded = load_yaml_text(text)
    try:
        loaded["model"].load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{what} do not fit the model: {err}") from err
    PostProcessing.from_dict(loaded["postprocessing"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / HPARAMS_FILE, out / MODEL_FILE]
    if card is not None:
        targets.append(out / CARD_FILE)
    existing = [p.name for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds {existing}; pass overwrite=True "
            "(--force) to replace them"
        )
    torch.save(state, out / MODEL_FILE)
    (out / HPARAMS_FILE).write_text(text)
    if card is not None:
        config_hash = hashlib.sha256(text.encode()).hexdigest()
        text = card(loaded, config_hash, sha256_of(out / MODEL_FILE), out)
        (out / CARD_FILE).write_text(text)
    elif (out / CARD_FILE).exists():
        (out / CARD_FILE).unlink()
    return out


# ----------------------------------------------------------------------
# The model card


def _describe_module(module):
    """One line per front-end module: its class and plain settings."""
    from speechbrain_sed_condmix.metadata import frontend_params

    groups = {}
    for key, value in frontend_params(module).items():
        path, _, name = key.rpartition(".")
        if path.endswith(("spectrogram", "mel_scale")):
            continue  # MelSpectrogram's parts repeat its settings
        groups.setdefault(path, {})[name] = value
    lines = []
    for path, values in groups.items():
        cls = values.pop("class")
        settings = ", ".join(f"{k}={v}" for k, v in values.items())
        lines.append(f"- `{path or 'frontend'}`: {cls}({settings})")
    return lines


def _causal_lines(hparams):
    """The card's lines on causality (streaming with carried state)."""
    if not getattr(hparams["model"], "causal", False):
        return [
            "- causal: no (needs future context: `sed-detect --stream` "
            "runs windows of the clip length)"
        ]
    spec = hparams["frontend"].melspec.spectrogram
    rate = hparams["encoder"].sample_rate
    ahead = (spec.n_fft // 2 - spec.hop_length) / rate
    return [
        "- causal: yes (causal convolutions, a unidirectional GRU, fixed "
        "mel scaling): `sed-detect --stream` carries the model's state, "
        f"frame by frame; a frame reads {ahead * 1000:g} ms of audio "
        "after its end (the centred STFT)"
    ]


def _postprocessing_lines(params):
    lines = [f"- method: {params['method']}"]
    lengths = params["median_filter"]
    if len(set(lengths.values())) == 1:
        value = next(iter(lengths.values()))
        lines.append(f"- median filter: {value} frames for every class")
    else:
        shown = ", ".join(f"{k} {v}" for k, v in lengths.items())
        lines.append(f"- median filter (frames): {shown}")
    lines.append(f"- threshold: {params['threshold']}")
    if params.get("csebbs"):
        lines.append(f"- cSEBB: {params['csebbs']}")
    for key, value in (params.get("info") or {}).items():
        lines.append(f"- {key}: {value}")
    return lines


def model_card_text(
    hparams,
    folder,
    title,
    source_lines,
    config_hash,
    model_sha256,
    license="unknown",
    metrics=None,
):
    """The model card (``README.md``) of a detector folder.

    Arguments
    ---------
    hparams : dict
        The loaded ``hyperparams.yaml`` of the folder.
    folder : str or pathlib.Path
        The folder, for the ``sed-detect`` command.
    title : str
        First heading.
    source_lines : list of str
        Markdown lines on where the weights come from (training data and
        run, or the released file's name, size and sha256).
    config_hash : str
        sha256 of ``hyperparams.yaml``.
    model_sha256 : str
        sha256 of ``model.ckpt`` (checked by ``from_hparams``).
    license : str
        Licence of the weights.
    metrics : dict, optional
        Metrics to list (e.g. ``metrics.json`` of the run).

    Returns
    -------
    str
        Markdown with a YAML front matter.
    """
    from speechbrain_sed_condmix import __version__

    encoder = hparams["encoder"]
    classes = list(encoder.classes)
    frame = encoder.hop_length * encoder.pooling / encoder.sample_rate
    front = [
        "---",
        f"license: {license}",
        "library_name: speechbrain",
        "tags: [sound-event-detection, speechbrain-sed-condmix]",
        # Quoted: a hex digest of digits only would read as a number.
        f"model_sha256: '{model_sha256}'",
        f"config_sha256: '{config_hash}'",
        f"package_version: {__version__}",
        "---",
    ]
    body = [
        f"# {title}",
        "",
        "A SoundEventDetector folder of speechbrain-sed-condmix.",
        "",
        "## Use",
        "",
        "```bash",
        f"sed-detect recording.wav --model {folder} --out events.tsv",
        f"sed-detect --stream --model {folder} < audio.raw  "
        f"# 16-bit PCM, mono, {encoder.sample_rate} Hz",
        "```",
        "",
        "Loading checks this card's sha256s of hyperparams.yaml and "
        "model.ckpt (they catch damage, not who made the folder) and "
        "refuses a hyperparams.yaml that names classes or functions outside "
        "the package's allow-list unless trust_remote_code=True "
        "(sed-detect --trust-remote-code) is given.",
        "",
        f"## Classes ({len(classes)}, in output order)",
        "",
        *[f"{i}. {name}" for i, name in enumerate(classes)],
        "",
        "## Front end and label grid",
        "",
        f"- input: mono audio at {encoder.sample_rate} Hz, windows of "
        f"{encoder.audio_duration} s",
        f"- output frames: {frame * 1000:g} ms ({encoder.n_frames} per window)",
        *_describe_module(hparams["frontend"]),
        f"- network: {type(hparams['model']).__name__}",
        *_causal_lines(hparams),
        "",
        "## Post-processing",
        "",
        *_postprocessing_lines(hparams["postprocessing"]),
        "",
        "## Source of the weights",
        "",
        *source_lines,
        "",
    ]
    if metrics:
        body += ["## Metrics", ""]
        body += [f"- {k}: {v}" for k, v in metrics.items()]
        body.append("")
    body += [
        "## Record",
        "",
        f"- package: speechbrain-sed-condmix {__version__}",
        f"- config hash (sha256 of hyperparams.yaml): `{config_hash}`",
        f"- `model.ckpt` sha256: `{model_sha256}` (checked when loading)",
        f"- licence of the weights: {license}",
        "",
    ]
    return "\n".join(front + body)
