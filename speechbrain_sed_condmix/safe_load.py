"""Read checkpoint files without running code from them.

A ``.ckpt`` file written by ``torch.save`` is a pickle, and unpickling can
call any function the file names: a downloaded checkpoint can run commands
on the machine that opens it. Every checkpoint this package reads goes
through :func:`load_checkpoint`, which uses PyTorch's weights-only
unpickler (``torch.load(..., weights_only=True)``). That unpickler rebuilds
tensors, containers and numbers, plus the few extra types named here:

* ``argparse.Namespace`` (hyper-parameters of older Lightning runs);
* Lightning's ``AttributeDict`` under its module paths
  (``pytorch_lightning.utilities.parsing``, ``lightning_fabric.utilities.
  data``, ``lightning.fabric.utilities.data``, ``lightning.pytorch.
  utilities.parsing``). Lightning is not needed: a stand-in registered under
  those names rebuilds a plain ``dict`` and imports nothing;
* ``pathlib`` paths (a path of the other operating system becomes its
  ``Pure`` flavour, as it cannot be instantiated here);
* NumPy scalars, dtypes and arrays of booleans, numbers and strings (not
  object arrays).

Anything else stops the load with :class:`UnsafeCheckpointError`, naming
the file, the refused globals and the explicit opt-in: with
``trust_checkpoint=True`` the file is unpickled in full
(``weights_only=False``), which can run its code, and a warning says so.
There is no fallback from one to the other.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import argparse
import logging
import os
import pathlib
import pickle
import re
import struct
import zipfile

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: How a refusal tells the user to opt in, unless the caller says otherwise.
DEFAULT_OPT_IN = "trust_checkpoint=True (in a recipe: --trust_checkpoint=True)"

# Where Lightning has defined AttributeDict over the years (a pickle names
# the class by the module that defines it).
_ATTRIBUTE_DICT_PATHS = (
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
)

# NumPy dtype kinds allowed in scalars and arrays: booleans, integers,
# floats, complex numbers, str and bytes. Object arrays ("O") and
# structured types ("V") are refused.
_NUMPY_KINDS = "biufcUS"


class CheckpointLoadError(ValueError):
    """A checkpoint file could not be loaded (base of the errors below)."""

    def __init__(self, message, path):
        super().__init__(message)
        self.path = path


class UnsafeCheckpointError(CheckpointLoadError):
    """The file holds objects that a weights-only load does not rebuild.

    Attributes
    ----------
    path : str
        The file.
    globals : tuple of str
        The refused globals (``module.name``), empty when the refusal names
        none (the reason is then in the message).
    """

    def __init__(self, message, path, refused=()):
        super().__init__(message, path)
        self.globals = tuple(refused)


class CorruptCheckpointError(CheckpointLoadError):
    """The file is not a readable ``torch.save`` file (e.g. truncated)."""


class _LightningAttributeDict:
    """Stand-in for Lightning's ``AttributeDict``: rebuilds a plain dict.

    The weights-only unpickler creates an allowed class with ``__new__``
    and fills it with ``SETITEMS``, which it only applies to plain dicts;
    returning one keeps the entries and imports nothing from Lightning.
    """

    def __new__(cls, *args, **kwargs):
        return dict(*args, **kwargs)


def _path_class(flavour):
    """The pathlib class that rebuilds a pickled ``<flavour>Path``.

    Concrete paths of the other operating system cannot be instantiated,
    so they come back as their pure flavour.
    """
    native = "Windows" if os.name == "nt" else "Posix"
    if flavour == native:
        return getattr(pathlib, f"{flavour}Path")
    return getattr(pathlib, f"Pure{flavour}Path")


def _numpy_globals():
    """NumPy globals of scalars, dtypes and plain arrays, by pickled name."""
    core = getattr(np, "_core", None) or np.core
    multiarray = core.multiarray
    entries = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    # NumPy 2 pickles name numpy._core, NumPy 1 pickles numpy.core.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries.append((multiarray.scalar, f"{module}.scalar"))
        entries.append((multiarray._reconstruct, f"{module}._reconstruct"))
    # A pickled dtype is rebuilt by np.dtype(...) and then given its state,
    # which the unpickler only allows for allow-listed types: the dtype
    # classes (numpy.dtypes.Float64DType, ...) of the allowed kinds.
    for code in np.typecodes["All"]:
        dtype = np.dtype(code)
        if dtype.kind in _NUMPY_KINDS and type(dtype) is not np.dtype:
            cls = type(dtype)
            entries.append((cls, f"{cls.__module__}.{cls.__qualname__}"))
    return entries


def _safe_globals():
    """The allow-list: ``(object, "module.name")`` pairs."""
    entries = [(argparse.Namespace, "argparse.Namespace")]
    entries += [(_LightningAttributeDict, p) for p in _ATTRIBUTE_DICT_PATHS]
    for flavour in ("Posix", "Windows"):
        for module in ("pathlib", "pathlib._local"):  # Python < / >= 3.13
            entries.append((_path_class(flavour), f"{module}.{flavour}Path"))
            pure = getattr(pathlib, f"Pure{flavour}Path")
            entries.append((pure, f"{module}.Pure{flavour}Path"))
    entries += _numpy_globals()
    return list(dict.fromkeys(entries))


#: Names of the non-tensor globals that a safe load accepts.
SAFE_GLOBAL_NAMES = tuple(sorted({name for _, name in _safe_globals()}))


def _file_kind(path):
    """``"zip"`` (torch.save since 1.6), ``"pickle"`` (older torch.save, or
    a plain pickle) or ``"other"``, from the first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == b"PK\x03\x04":
        return "zip"
    # Pickle protocols 2 and later start with the PROTO opcode.
    return "pickle" if head[:1] == b"\x80" else "other"


def _refusal(path, refused, reason, opt_in):
    what = (
        "objects of types that a weights-only load does not rebuild: "
        + ", ".join(refused)
        if refused
        else f"content that a weights-only load refuses ({reason})"
    )
    return UnsafeCheckpointError(
        f"{path}: refused to load the checkpoint: it holds {what}. Loading "
        "it in full would unpickle it, which can run code stored in the "
        f"file. If you trust where the file comes from, pass {opt_in}.",
        path,
        refused,
    )


def _corrupt(path, err):
    return CorruptCheckpointError(
        f"{path}: cannot read the checkpoint (truncated, or not written "
        f"by torch.save): {type(err).__name__}: {err}",
        path,
    )


# Words of the errors torch raises for a damaged file (zip reader, legacy
# format reader).
_READ_ERROR_WORDS = ("PytorchStreamReader", "zip", "EOF", "corrupt", "magic")


def _is_read_error(err):
    """Whether ``err`` from torch.load means the file itself is damaged."""
    if isinstance(err, (EOFError, KeyError, struct.error, zipfile.BadZipFile)):
        return True
    return isinstance(err, RuntimeError) and any(
        word in str(err) for word in _READ_ERROR_WORDS
    )


def _weights_only_reason(err):
    """``(refused global or None, reason)`` from torch's long refusal."""
    text = str(err)
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        return found.group(1), f"GLOBAL {found.group(1)}"
    # "Can only build ... types allowlisted via add_safe_globals, but got
    # <class 'numpy.dtypes.ObjectDType'>": an allowed constructor made an
    # object of a type that is not allowed.
    found = re.search(r"but got <class '([^']+)'>", text)
    if found:
        return found.group(1), f"an object of type {found.group(1)}"
    lines = [
        line.strip()
        for line in text.split("WeightsUnpickler error:")[-1].splitlines()
        if line.strip()
    ]
    return None, (lines[0] if lines else type(err).__name__)


def _load_weights_only(path, map_location, opt_in):
    # Only add what is missing: leaving the context removes the entries
    # it added, which must not drop globals that the user allowed.
    registered = set(torch.serialization.get_safe_globals())
    missing = [g for g in _safe_globals() if g not in registered]
    kind = _file_kind(path)
    if kind == "other":
        raise _corrupt(path, ValueError("no zip or pickle header"))
    with torch.serialization.safe_globals(missing):
        if kind == "zip":
            # A static scan names every refused global at once (the
            # unpickler stops at the first one).
            try:
                refused = torch.serialization.get_unsafe_globals_in_checkpoint(
                    path
                )
            except (RuntimeError, ValueError, zipfile.BadZipFile) as err:
                raise _corrupt(path, err) from None
            if refused:
                raise _refusal(path, sorted(refused), None, opt_in)
        try:
            return torch.load(
                path, map_location=map_location, weights_only=True
            )
        except pickle.UnpicklingError as err:
            name, reason = _weights_only_reason(err)
            if name is None and "truncated" in reason:
                raise _corrupt(path, err) from None
            refused = [name] if name else []
            raise _refusal(path, refused, reason, opt_in) from None
        except Exception as err:
            if _is_read_error(err):
                raise _corrupt(path, err) from None
            raise


def load_checkpoint(
    path, *, trust_checkpoint=False, map_location="cpu", opt_in=DEFAULT_OPT_IN
):
    """Load a ``torch.save`` file without running code from it.

    Arguments
    ---------
    path : str or os.PathLike
        The checkpoint file.
    trust_checkpoint : bool
        False (default): weights-only load with the allow-list of the module
        docstring; anything else is refused. True: full unpickling
        (``weights_only=False``), for files from a trusted source only: it
        runs whatever code the file holds. A warning is logged.
    map_location : str, torch.device or callable
        Passed to :func:`torch.load`.
    opt_in : str
        How the caller's user opts in, quoted by a refusal (a command line
        tool can name its own flag).

    Returns
    -------
    object
        What the file holds (Lightning ``AttributeDict`` entries come back as
        plain dicts).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    UnsafeCheckpointError
        If a safe load refuses the file; the message names the file, the
        refused globals and the opt-in.
    CorruptCheckpointError
        If the file is truncated or not a ``torch.save`` file.

    Example
    -------
    >>> import argparse
    >>> path = getfixture("tmp_path") / "run.ckpt"
    >>> torch.save({"state_dict": {"w": torch.ones(2)},
    ...             "hyper_parameters": argparse.Namespace(lr=0.1)}, path)
    >>> ckpt = load_checkpoint(path)
    >>> ckpt["state_dict"]["w"], ckpt["hyper_parameters"].lr
    (tensor([1., 1.]), 0.1)
    >>> import datetime
    >>> torch.save({"date": datetime.date(2026, 1, 1)}, path)
    >>> load_checkpoint(path)
    Traceback (most recent call last):
        ...
    speechbrain_sed_condmix.safe_load.UnsafeCheckpointError: ...datetime.date...
    >>> load_checkpoint(path, trust_checkpoint=True)
    {'date': datetime.date(2026, 1, 1)}
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if not trust_checkpoint:
        return _load_weights_only(path, map_location, opt_in)
    logger.warning(
        "Loading %s with trust_checkpoint=True: the file is unpickled in "
        "full (weights_only=False), which runs any code stored in it. Only "
        "do this for files from a trusted source.",
        path,
    )
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        # A foreign file fails in the pickle reader ("invalid load key").
        if _is_read_error(err) or isinstance(err, pickle.UnpicklingError):
            raise _corrupt(path, err) from None
        raise
