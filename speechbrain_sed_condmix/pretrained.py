"""Initialise ATST-SED from a pretrained ATST-Frame or a stage-1 result.

Stage 1 starts from the pretrained ATST-Frame checkpoint (``--atst_ckpt``).
Stage 2 (and ATST-SEDv2) starts from the stage-1 student and teacher
(``--stage1_ckpt``), which already hold the ATST weights.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging
from pathlib import Path

from speechbrain_sed_condmix.safe_load import load_checkpoint
from speechbrain_sed_condmix.teacher import unwrap_module

logger = logging.getLogger(__name__)


def find_stage_checkpoint(path, max_key=None):
    """The checkpoint directory holding ``student.ckpt`` and ``teacher.ckpt``.

    Arguments
    ---------
    path : str or Path
        A SpeechBrain checkpoint directory (``CKPT+...``), a save folder
        holding such directories, or an experiment folder with ``save/``.
    max_key : str, optional
        Meta key that selects among several checkpoints (highest wins);
        without it, the most recent one.

    Returns
    -------
    Path
        The checkpoint directory.

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "save" / "CKPT+1").mkdir(parents=True)
    >>> (root / "save" / "CKPT+1" / "student.ckpt").touch()
    >>> find_stage_checkpoint(root).name
    'CKPT+1'
    """
    from speechbrain.utils.checkpoints import Checkpointer

    path = Path(path)
    if (path / "student.ckpt").is_file():
        return path
    for folder in (path, path / "save"):
        candidates = [
            p for p in folder.glob("CKPT+*") if (p / "student.ckpt").is_file()
        ]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            found = Checkpointer(folder).find_checkpoint(max_key=max_key)
            if found is not None:
                return Path(found.path)
    raise FileNotFoundError(
        f"No checkpoint with student.ckpt under {path}: pass a stage-1 "
        "checkpoint directory (save/CKPT+...), its save folder or its "
        "output folder"
    )


def load_pretrained(
    student,
    teacher,
    atst_ckpt=None,
    stage1_ckpt=None,
    atst_random_init=False,
    stage1_key=None,
    metadata=None,
    trust_checkpoint=False,
):
    """Load pretrained weights into the student and its EMA teacher.

    * ``stage1_ckpt``: strict load of the stage-1 student and teacher (the
      ATST weights included), as ATST-SED stage 2 does;
    * else ``atst_ckpt``: the ATST-Frame encoder of both models from the
      official checkpoint (see ``load_atst_checkpoint``);
    * else, for a model with an ATST branch, an error that says where to get
      the checkpoint, unless ``atst_random_init`` (tests, CPU smoke runs).

    A model without an ATST branch and no ``stage1_ckpt`` is left as it is.

    Arguments
    ---------
    student : torch.nn.Module
        The student model.
    teacher : EMATeacher
        Its EMA teacher.
    atst_ckpt : str, optional
        Pretrained ATST-Frame checkpoint (e.g. ``atst_as2M.ckpt``).
    stage1_ckpt : str, optional
        Stage-1 result (see :func:`find_stage_checkpoint`).
    atst_random_init : bool
        Allow a randomly initialised ATST (never for real results).
    stage1_key : str, optional
        Meta key that picks among several stage-1 checkpoints.
    metadata : ModelMetadata, optional
        The classes and front end of the YAML: a stage-1 checkpoint that
        records others is refused with a message naming both.
    trust_checkpoint : bool
        Unpickle the checkpoint files in full, which can run code stored in
        them (only for files from a trusted source). By default they are
        read with :func:`~speechbrain_sed_condmix.safe_load.load_checkpoint`,
        which runs no code from them and refuses files that hold more than
        weights and plain values.

    Returns
    -------
    str
        What was loaded, for the log.
    """
    student = unwrap_module(student)
    branch = getattr(student, "atst_frame", None)
    if stage1_ckpt:
        folder = find_stage_checkpoint(stage1_ckpt, stage1_key)
        if metadata is not None:
            metadata.check_folder(folder)
        for name, module in (("student", student), ("teacher", teacher)):
            path = folder / f"{name}.ckpt"
            state = load_checkpoint(path, trust_checkpoint=trust_checkpoint)
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as err:
                details = "\n".join(str(err).splitlines()[:6])
                raise ValueError(
                    f"--stage1_ckpt: {path} does not fit this recipe's "
                    f"{name}: it was trained with another model (a different "
                    "recipe or other cnn_filters, rnn_hidden, atst_* or "
                    "n_classes). Pass the output folder of the matching "
                    f"stage-1 run.\n{details}"
                ) from None
        logger.info("Initialised student and teacher from %s", folder)
        return f"stage-1 checkpoint {folder}"
    if branch is None:
        return "nothing (no ATST branch)"
    from speechbrain_sed_condmix.lobes.atst import (
        ATST_CHECKPOINT_HELP,
        load_atst_checkpoint,
    )

    if atst_ckpt:
        n = load_atst_checkpoint(
            branch.atst, atst_ckpt, trust_checkpoint=trust_checkpoint
        )
        teacher.model.atst_frame.atst.load_state_dict(branch.atst.state_dict())
        if getattr(student, "atst_trainable", False):
            logger.warning(
                "Fine-tuning ATST without a stage-1 initialisation; ATST-SED "
                "stage 2 expects --stage1_ckpt"
            )
        logger.info("Loaded %d ATST-Frame tensors from %s", n, atst_ckpt)
        return f"ATST-Frame checkpoint {atst_ckpt}"
    if atst_random_init:
        logger.warning("ATST-Frame is randomly initialised (test setting)")
        return "random ATST-Frame"
    raise ValueError(
        "This recipe needs pretrained weights: pass "
        "--atst_ckpt=/path/to/atst_as2M.ckpt (stage 1) or "
        "--stage1_ckpt=/path/to/stage1/output (stage 2). "
        + ATST_CHECKPOINT_HELP
    )
