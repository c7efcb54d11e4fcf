"""Check a detector folder before anything in it is parsed or built.

:func:`check_folder`, which ``SoundEventDetector.from_hparams`` (and so
``sed-detect``) runs first:

1. integrity: ``hyperparams.yaml`` and ``model.ckpt`` against the
   ``config_sha256`` and ``model_sha256`` of the model card
   (:mod:`speechbrain_sed_condmix.model_folder`), before the YAML is read;
2. the allow-list of :mod:`speechbrain_sed_condmix.safe_yaml` on the YAML,
   composed only.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging
from pathlib import Path

from speechbrain_sed_condmix.model_folder import (
    CARD_FILE,
    HPARAMS_FILE,
    MODEL_FILE,
    ModelFileMismatchError,
    sha256_of,
)
from speechbrain_sed_condmix.safe_yaml import OPT_IN, check_yaml

logger = logging.getLogger(__name__)


def _card_front_matter(card_path):
    """The YAML front matter of a card as a dict (empty when absent)."""
    import yaml

    text = Path(card_path).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    if end < 0:
        raise ModelFileMismatchError(
            f"{card_path} line 1: the front matter has no closing '---'"
        )
    try:
        data = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as err:
        raise ModelFileMismatchError(
            f"{card_path}: unreadable front matter ({err})"
        ) from err
    return data if isinstance(data, dict) else {}


def _card_hashes(folder):
    """The card of a folder and its recorded sha256s (None: no card)."""
    card = Path(folder) / CARD_FILE
    if not card.is_file():
        return None, {}
    meta = _card_front_matter(card)
    hashes = {
        name: str(meta[key]).lower()
        for name, key in (
            (HPARAMS_FILE, "config_sha256"),
            (MODEL_FILE, "model_sha256"),
        )
        if meta.get(key)
    }
    return card, hashes


def _check_hash(folder, name, expected, card):
    # Named by their real paths: savedir holds links to the source's.
    path, card = (Path(folder) / name).resolve(), Path(card).resolve()
    if not path.is_file():
        raise ModelFileMismatchError(
            f"{path}: missing, but {card} describes it"
        )
    found = sha256_of(path)
    if found != expected:
        raise ModelFileMismatchError(
            f"{path}: sha256 {found} differs from {expected} recorded in "
            f"{card}; the file was changed after the folder was written. "
            "Not loading it."
        )


def verify_model_file(folder):
    """Check ``model.ckpt`` against the sha256 recorded in the model card.

    Arguments
    ---------
    folder : str or pathlib.Path
        A detector folder.

    Returns
    -------
    bool
        True when the card records a sha256 and the file matches it;
        False when there is no card or no sha256 in it (nothing to check).

    Raises
    ------
    ModelFileMismatchError
        When the file differs from the card's record; the weights must not
        be loaded then.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> verify_model_file(folder)
    False
    >>> _ = (folder / "model.ckpt").write_bytes(b"weights")
    >>> _ = (folder / "README.md").write_text(
    ...     "---\\nmodel_sha256: x" + "ab" * 31 + "\\n---\\n")
    >>> verify_model_file(folder)
    Traceback (most recent call last):
    ...
    speechbrain_sed_condmix.model_folder.ModelFileMismatchError: ...
    """
    card, hashes = _card_hashes(folder)
    if MODEL_FILE not in hashes:
        return False
    _check_hash(folder, MODEL_FILE, hashes[MODEL_FILE], card)
    return True


def check_folder(
    folder, trust_remote_code=False, overrides=None, hparams_file=HPARAMS_FILE
):
    """Check a detector folder before anything in it is parsed or built.

    1. Integrity: ``hyperparams.yaml`` and ``model.ckpt`` against the
       ``config_sha256`` and ``model_sha256`` of the model card, before
       the YAML is parsed. A folder without a card (or a card without
       them) is loaded with a warning: nothing to check against.
    2. The allow-list: :func:`~speechbrain_sed_condmix.safe_yaml.check_yaml`
       on the YAML text, composed only, nothing built.

    The hashes catch damage and edits made without updating the card;
    whoever edits a file can edit the card too, so they do not prove who
    made the folder. The allow-list is what keeps a folder from running
    code.

    Arguments
    ---------
    folder : str or pathlib.Path
        A local detector folder.
    trust_remote_code : bool
        Load a YAML that names other targets (logged with their names).
    overrides : dict, optional
        Overrides the loader applies.
    hparams_file : str
        The YAML the loader reads (the card describes ``hyperparams.yaml``).

    Returns
    -------
    list
        The targets outside the allow-list (only when trusted).

    Raises
    ------
    ModelFileMismatchError
        A file differs from the card (the message names the file, the
        expected and the found sha256).
    speechbrain_sed_condmix.safe_yaml.UntrustedYAMLError
        The YAML names targets outside the allow-list (untrusted).
    """
    folder = Path(folder)
    card, hashes = _card_hashes(folder)
    for name, expected in hashes.items():
        if name == HPARAMS_FILE != hparams_file:
            continue  # not the YAML that is read: the allow-list still is
        _check_hash(folder, name, expected, card)
    if card is None:
        logger.warning(
            "%s has no model card (%s): its files cannot be checked for "
            "damage; its %s is still checked against the allow-list",
            folder,
            CARD_FILE,
            HPARAMS_FILE,
        )
    elif HPARAMS_FILE not in hashes:
        logger.warning("%s records no config_sha256", card)
    path = (folder / hparams_file).resolve()
    outside = check_yaml(
        path.read_text(encoding="utf-8"),
        path,
        trust_remote_code=trust_remote_code,
        overrides=overrides,
        opt_in=OPT_IN,
    )
    if outside:
        logger.warning(
            "Loading %s with trust_remote_code=True: it builds or calls "
            "targets outside the allow-list, which can run any code: %s",
            path,
            "; ".join(str(t) for t in outside),
        )
    return outside
