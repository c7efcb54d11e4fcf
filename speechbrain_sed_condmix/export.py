"""Export a trained model of an experiment folder as a detector folder.

:func:`export_detector` (``sed-export``) packs one checkpoint of an
experiment folder (written by ``recipes/DESED/SED/train.py``) into a
SpeechBrain source folder (see :mod:`speechbrain_sed_condmix.model_folder`):
``hyperparams.yaml`` (front end, model, label grid, classes, windowing and
the tuned post-processing), ``model.ckpt`` (the EMA teacher's weights as a
plain model state dict) and the ``README.md`` model card.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import datetime
import json
import logging
from pathlib import Path

from speechbrain_sed_condmix.model_folder import (
    DEFAULT_SILENCE_PEAK,
    HPARAMS_FILE,
    YAML_HEADER,
    check_and_write,
    copy_node,
    detector_tree,
    dump_yaml,
    load_yaml_text,
    model_card_text,
    plain_yaml,
    yaml_parser,
)
from speechbrain_sed_condmix.postprocessing import PostProcessing
from speechbrain_sed_condmix.safe_load import load_checkpoint

logger = logging.getLogger(__name__)

#: The class list a training run writes into its output folder.
CLASSES_FILE = "classes.txt"


def _model_state(checkpoint_dir, weights):
    path = Path(checkpoint_dir) / f"{weights}.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    state = load_checkpoint(path)
    if weights == "teacher":
        # EMATeacher.state_dict(): the network sits under "model."
        prefix = "model."
        stray = [k for k in state if not k.startswith(prefix)]
        if stray:
            raise ValueError(
                f"{path}: not an EMATeacher state dict (keys without "
                f"'{prefix}', e.g. {stray[:3]})"
            )
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def export_detector(
    experiment_folder,
    out_folder,
    checkpoint=None,
    weights="teacher",
    postprocessing=None,
    window_hop=None,
    batch_size=8,
    silence_peak=DEFAULT_SILENCE_PEAK,
    overwrite=False,
    license="unknown",
):
    """Pack a trained model into a SpeechBrain source folder.

    Reads the experiment's ``hyperparams.yaml`` (the resolved recipe copy
    that ``train.py`` writes) for the front end (``frontend``), the
    network (``student``, whose architecture the teacher shares) and the
    label grid (``encoder``), and one checkpoint for the weights. Writes:

    * ``hyperparams.yaml``: ``encoder`` (classes written out; so is the
      model's ``n_class`` where the recipe computes it from a class file,
      so that the folder needs no file of the training run),
      ``frontend``, ``model``, ``modules``, a ``pretrainer`` that loads
      ``model.ckpt``, the windowing (``window_hop``, ``batch_size``,
      ``silence_peak``), ``postprocessing`` and ``export_info``;
    * ``model.ckpt``: the network's plain state dict;
    * ``README.md``: the model card (classes, front end, post-processing,
      the run and its test metrics from ``metrics.json``, package version,
      config hash, licence, the sha256 of ``model.ckpt``).

    The post-processing is, in this order: ``postprocessing`` if given,
    the experiment's ``postprocessing.json`` (tuned for the teacher by the
    recipe's test stage; not used for the student), else the recipe's
    ``median_filter`` with threshold 0.5.
    Before anything is written, the new YAML is loaded and the weights are
    loaded into it strictly.

    Arguments
    ---------
    experiment_folder : str or pathlib.Path
        Output folder of a training run.
    out_folder : str or pathlib.Path
        Folder to write (created).
    checkpoint : str or pathlib.Path, optional
        A ``save/CKPT+...`` folder; default: the best one by the
        experiment's ``selection_key`` (the one its test stage used).
    weights : str
        ``"teacher"`` (the EMA teacher, default) or ``"student"``.
    postprocessing : PostProcessing or dict, optional
        Post-processing to store instead of the experiment's.
    window_hop : float, optional
        Seconds between the windows of long files (default: half the
        model's clip length, 5 s for 10 s clips).
    batch_size : int
        Windows per forward pass at inference.
    silence_peak : float
        Peak amplitude under which a window is treated as silence.
    overwrite : bool
        Replace existing files in ``out_folder``.
    license : str
        Licence of the weights, written into the model card.

    Returns
    -------
    pathlib.Path
        ``out_folder``.

    Example
    -------
    >>> out = export_detector(  # doctest: +SKIP
    ...     "results/crnn_mt/42", "exported/crnn_mt")
    >>> sorted(p.name for p in out.iterdir())  # doctest: +SKIP
    ['README.md', 'hyperparams.yaml', 'model.ckpt']
    """
    from speechbrain_sed_condmix.pretrained import find_stage_checkpoint

    experiment = Path(experiment_folder)
    hparams_path = experiment / HPARAMS_FILE
    if not hparams_path.is_file():
        raise FileNotFoundError(
            f"{hparams_path} does not exist: pass the output folder of a "
            "training run (recipes/DESED/SED/train.py)"
        )
    if weights not in ("teacher", "student"):
        raise ValueError(f"weights must be teacher or student: {weights!r}")
    tree = yaml_parser().load(hparams_path.read_text())
    missing = [k for k in ("encoder", "frontend", "student") if k not in tree]
    if missing:
        raise ValueError(f"{hparams_path} lacks the key(s) {missing}")
    if checkpoint is None:
        checkpoint = find_stage_checkpoint(
            experiment, max_key=tree.get("selection_key")
        )
    checkpoint = Path(checkpoint)
    state = _model_state(checkpoint, weights)

    encoder_node = copy_node(tree["encoder"])
    class_list = experiment / CLASSES_FILE
    if class_list.is_file():
        # The run's own record: the YAML may read its classes from a file
        # in the data folder, which need not exist any more.
        from speechbrain_sed_condmix.dataio.custom import load_classes

        encoder_node["classes"] = copy_node(
            load_classes(classes_file=class_list)
        )
    try:
        encoder = load_yaml_text(
            dump_yaml({"encoder": encoder_node}), hparams_path
        )["encoder"]
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{hparams_path}: key 'encoder.classes' reads {err.filename}, "
            f"which does not exist, and the run's record {class_list} is "
            "missing too: restore one of them (one class per line, in the "
            "training order)"
        ) from err
    # The checkpoint's record of its classes and front end must match.
    from speechbrain_sed_condmix.metadata import ModelMetadata

    frontend = load_yaml_text(
        dump_yaml({"frontend": copy_node(tree["frontend"])}), hparams_path
    )["frontend"]
    ModelMetadata(encoder.classes, frontend, encoder).check_folder(checkpoint)
    encoder_node["classes"] = copy_node(list(encoder.classes))
    if postprocessing is None:
        tuned = experiment / "postprocessing.json"
        # The recipe tunes the teacher's post-processing only.
        if tuned.is_file() and weights == "teacher":
            postprocessing = PostProcessing.load(tuned)
        else:
            postprocessing = PostProcessing(
                encoder.classes,
                median_filter=plain_yaml(tree.get("median_filter", 1)),
                info={"tuned": "no: the recipe's median filter, threshold 0.5"},
            )
    elif isinstance(postprocessing, dict):
        postprocessing = PostProcessing.from_dict(postprocessing)
    if postprocessing.classes != list(encoder.classes):
        raise ValueError(
            f"post-processing classes {postprocessing.classes} differ from "
            f"the model's {list(encoder.classes)}"
        )
    window = encoder.audio_duration
    if window_hop is None:
        window_hop = window / 2
    if not 0 < float(window_hop) <= window:
        raise ValueError(f"window_hop must be in (0, {window}] s")

    info = {
        "experiment": str(experiment.resolve()),
        "checkpoint": checkpoint.name,
        "weights": weights,
        "date": datetime.date.today().isoformat(),
    }
    out_tree = detector_tree(
        encoder_node,
        copy_node(tree["frontend"]),
        copy_node(tree["student"]),
        postprocessing,
        window_hop,
        batch_size,
        silence_peak,
        "export_info",
        info,
    )
    text = YAML_HEADER.format(how="export_detector / sed-export")
    text += dump_yaml(out_tree)
    metrics = _run_metrics(experiment, weights)
    data = plain_yaml(tree.get("data_folder", "unknown"))

    def card(loaded, config_hash, model_sha256, folder):
        """The model card of the exported folder (Markdown)."""
        source = [
            f"- training run: `{experiment.name}` (recipe "
            "recipes/DESED/SED/train.py), checkpoint "
            f"`{checkpoint.name}`, {weights} weights",
            f"- training data: `{data}` (the run's data_folder; "
            "mini-DESED is generated audio, not DESED)",
        ]
        return model_card_text(
            loaded,
            folder,
            f"Sound event detector exported from {experiment.name}",
            source,
            config_hash,
            model_sha256,
            license=license,
            metrics=metrics,
        )

    out = check_and_write(
        out_folder,
        text,
        state,
        f"the {weights} weights of {checkpoint} (for {hparams_path})",
        card=card,
        overwrite=overwrite,
    )
    logger.info(
        "Exported the %s of %s to %s", weights, checkpoint, out.resolve()
    )
    return out


def _run_metrics(experiment, weights):
    """The test metrics of the exported weights from ``metrics.json``."""
    path = Path(experiment) / "metrics.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except ValueError:
        logger.warning("%s is not valid JSON; the card lists no metrics", path)
        return None
    values = summary.get(weights) or {}
    found = {
        f"{k} ({weights}, test set)": round(float(v), 4)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    return found or None
