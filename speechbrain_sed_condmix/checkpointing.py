"""Crash-safe checkpoints: atomic writes, verified recovery, disk full.

SpeechBrain's ``Checkpointer`` writes ``CKPT.yaml`` first and the parameter
files after it, in the final ``CKPT+...`` folder. A run killed during the
save (pre-emption, a dead node) leaves a folder that looks complete to
recovery; it is the newest, so every later resume loads it and fails.

:class:`AtomicCheckpointer` keeps SpeechBrain's folder format and API and
changes how a checkpoint is written and read back:

* **atomic**: every file is written into a hidden sibling folder
  (``.partial+CKPT+...``), with a ``CHECKSUMS.sha256`` manifest (the
  format of ``sha256sum``, so ``sha256sum -c`` checks it by hand) and
  ``CKPT.yaml``; the files and the folder are flushed to disk (fsync),
  then the folder is renamed to its final name. Recovery only lists
  ``CKPT+`` folders, so it never sees one that is half written. Older
  checkpoints are deleted only after the rename, and the ``keep_newest``
  newest are never deleted, so a damaged newest one has a fallback;
* **verified recovery**: before loading, each file is checked against the
  manifest (for checkpoints written without one, torch archives are
  checked for completeness). A damaged checkpoint is skipped with a
  warning that names it and the reason, and the next one in order is
  tried. When checkpoints exist but none is usable,
  :class:`NoUsableCheckpointError` lists them, unless
  ``allow_fresh_start`` is set (then the run starts from the beginning);
* **disk full**: a failed write (``ENOSPC`` or any ``OSError``) removes
  the partial folder, leaves the previous checkpoints as they were and
  raises :class:`CheckpointWriteError`, which names the folder, the free
  space and the space a checkpoint needs. Under DDP the main process
  writes and every rank raises the same error.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import errno
import hashlib
import logging
import os
import shutil
import zipfile
from pathlib import Path

import yaml
from speechbrain.utils.checkpoints import (
    DEFAULT_SAVE_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    ckpt_recency,
    get_default_hook,
)
from speechbrain.utils.distributed import (
    MainProcessContext,
    ddp_barrier,
    ddp_broadcast,
    if_main_process,
)

logger = logging.getLogger(__name__)

#: Prefix of a checkpoint folder being written (not a ``CKPT+`` folder).
PARTIAL_PREFIX = ".partial+"
#: The per-checkpoint manifest: ``<sha256>  <file name>`` lines.
CHECKSUM_FILE = "CHECKSUMS.sha256"
#: Read size for hashing and verifying files.
_CHUNK = 1 << 20


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous ones are intact."""


class NoUsableCheckpointError(RuntimeError):
    """Checkpoints were found, but every one is damaged or unreadable."""


def sha256_of(path):
    """The hexadecimal SHA-256 digest of a file.

    Arguments
    ---------
    path : str or Path
        The file.

    Returns
    -------
    str
        64 hexadecimal digits.

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.txt"
    >>> _ = path.write_bytes(b"abc")
    >>> sha256_of(path)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_problem(folder):
    """Why a checkpoint folder cannot be trusted, or None if it can.

    With a ``CHECKSUMS.sha256`` manifest, every listed file must exist and
    match its digest. Without one (a checkpoint written by SpeechBrain's
    ``Checkpointer``), every ``.ckpt`` file that is a torch archive (zip)
    must be complete: its central directory readable and every member's
    CRC correct. Nothing is unpickled.

    Arguments
    ---------
    folder : str or Path
        A ``CKPT+...`` folder.

    Returns
    -------
    str or None
        The reason, naming the file; None when the checkpoint is sound.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> _ = (folder / "a.ckpt").write_text("step: 3")
    >>> write_checksums(folder)
    >>> checkpoint_problem(folder) is None
    True
    >>> _ = (folder / "a.ckpt").write_text("step")
    >>> checkpoint_problem(folder)
    'a.ckpt: 4 bytes, 7 expected (truncated or changed)'
    """
    folder = Path(folder)
    manifest = folder / CHECKSUM_FILE
    if manifest.is_file():
        for name, (size, digest) in read_checksums(manifest).items():
            path = folder / name
            if not path.is_file():
                return f"{name}: missing"
            actual = path.stat().st_size
            if actual != size:
                return (
                    f"{name}: {actual} bytes, {size} expected "
                    "(truncated or changed)"
                )
            if sha256_of(path) != digest:
                return f"{name}: checksum mismatch (corrupt)"
        return None
    for path in sorted(folder.glob("*" + PARAMFILE_EXT)):
        with open(path, "rb") as handle:
            is_zip_magic = handle.read(2) == b"PK"
        if not is_zip_magic:
            continue  # text files (counters, Brain state): checked on load
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            return f"{path.name}: not a complete torch archive ({err})"
        if bad is not None:
            return f"{path.name}: corrupt member {bad}"
    return None


def write_checksums(folder):
    """Write ``CHECKSUMS.sha256`` for the files of a checkpoint folder.

    Each file has a ``sha256sum`` line (``<sha256>  <name>``), preceded by
    a comment line with its size (``# <bytes> <name>``), so that a
    truncated file is named without hashing it; ``sha256sum -c`` skips
    the comments.

    Arguments
    ---------
    folder : str or Path
        The folder; every regular file but the manifest is listed.
    """
    folder = Path(folder)
    lines = []
    for path in sorted(folder.iterdir()):
        if path.name == CHECKSUM_FILE or not path.is_file():
            continue
        lines.append(f"# {path.stat().st_size} {path.name}")
        lines.append(f"{sha256_of(path)}  {path.name}")
    (folder / CHECKSUM_FILE).write_text("\n".join(lines) + "\n")


def read_checksums(manifest):
    """``{file name: (size, sha256)}`` from a ``CHECKSUMS.sha256``."""
    sizes, entries = {}, {}
    for line in Path(manifest).read_text().splitlines():
        if line.startswith("# "):
            size, name = line[2:].split(" ", 1)
            sizes[name] = int(size)
        elif line.strip():
            digest, name = line.split("  ", 1)
            entries[name] = (sizes.get(name, -1), digest)
    return entries


def _fsync_tree(folder):
    """Flush every file of ``folder``, then the folder entry, to disk."""
    for path in Path(folder).iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder):
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _folder_size(folder):
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def _megabytes(n_bytes):
    return f"{n_bytes / 2**20:.1f} MiB"


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer``, crash-safe (see the module doc).

    Arguments
    ---------
    checkpoints_dir : str or Path
        Where the ``CKPT+...`` folders go.
    recoverables : mapping, optional
        Objects to save and recover, by name.
    custom_load_hooks, custom_save_hooks : mapping, optional
        As in SpeechBrain.
    allow_partial_load : bool
        As in SpeechBrain.
    allow_fresh_start : bool
        When checkpoints exist but none is usable: True starts from the
        beginning with a warning; False (default) raises
        :class:`NoUsableCheckpointError` with the list of what was found.
    keep_newest : int
        The newest checkpoints that deletion always keeps (default 2), on
        top of what ``save_and_keep_only`` keeps, so that recovery can
        fall back when the newest is damaged.

    Example
    -------
    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> save = getfixture("tmp_path") / "save"
    >>> ckpter = AtomicCheckpointer(save, {"model": model})
    >>> first = ckpter.save_and_keep_only(meta={"epoch": 1})
    >>> second = ckpter.save_and_keep_only(meta={"epoch": 2})
    >>> newest = ckpter.find_checkpoint()
    >>> _ = (newest.path / "model.ckpt").write_bytes(b"PK")  # truncated
    >>> ckpter.recover_if_possible().meta["epoch"]  # warns, falls back
    1
    """

    def __init__(
        self,
        checkpoints_dir,
        recoverables=None,
        custom_load_hooks=None,
        custom_save_hooks=None,
        allow_partial_load=False,
        allow_fresh_start=False,
        keep_newest=2,
    ):
        super().__init__(
            checkpoints_dir,
            recoverables=recoverables,
            custom_load_hooks=custom_load_hooks,
            custom_save_hooks=custom_save_hooks,
            allow_partial_load=allow_partial_load,
        )
        self.allow_fresh_start = bool(allow_fresh_start)
        self.keep_newest = int(keep_newest)
        self.unreadable = []

    # ------------------------------------------------------------------
    # Writing

    def save_checkpoint(
        self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO
    ):
        """Write a checkpoint atomically (see the module doc).

        Arguments
        ---------
        meta : mapping
            Added to ``CKPT.yaml`` (``unixtime`` and ``end-of-epoch`` too).
        end_of_epoch : bool
            Whether the checkpoint is at the end of an epoch.
        name : str, optional
            A custom name (``CKPT+<name>``); default: a time stamp.
        verbosity : int
            Logging level of the "Saved" message.

        Returns
        -------
        Checkpoint or None
            The checkpoint (main process); None on the other processes.

        Raises
        ------
        CheckpointWriteError
            On every process, when the main process could not write it.
        """
        final = partial = error = None
        if if_main_process():
            if name is None:
                final = self._new_checkpoint_dirpath()
            else:
                final = self._custom_checkpoint_dirpath(name)
            partial = final.with_name(PARTIAL_PREFIX + final.name)
            try:
                if partial.exists():
                    shutil.rmtree(partial)
                partial.mkdir(parents=True)
            except OSError as err:
                error = self._write_error(err, partial)
        # Every process runs the save hooks (some save on all ranks).
        partial = ddp_broadcast(partial, src=0)
        error = ddp_broadcast(error, src=0)
        cause = local_error = None
        if error is None:
            try:
                self._call_save_hooks(partial)
            except Exception as err:  # torch reports ENOSPC as RuntimeError
                cause = err
                if if_main_process():
                    error = self._write_error(err, partial)
                else:  # the folder is the main process's to remove
                    local_error = f"{type(err).__name__}: {err}"
        saved_meta = None
        if if_main_process() and error is None:
            try:
                saved_meta = self._save_checkpoint_metafile(
                    partial / METAFNAME, meta, end_of_epoch
                )
                write_checksums(partial)
                _fsync_tree(partial)
                self._replace(partial, final)
            except OSError as err:
                error, cause = self._write_error(err, partial), err
        error = ddp_broadcast(error, src=0)
        if error is not None:
            raise CheckpointWriteError(error) from cause
        if local_error is not None:
            raise CheckpointWriteError(
                f"Could not save this process's part of a checkpoint in "
                f"{partial}: {local_error}"
            ) from cause
        if not if_main_process():
            return None
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, f"Saved an {kind} checkpoint in {final}")
        paramfiles = {
            n: final / f"{n}{PARAMFILE_EXT}" for n in self.recoverables
        }
        return Checkpoint(final, saved_meta, paramfiles)

    def _call_save_hooks(self, folder):
        for name, obj in self.recoverables.items():
            path = folder / f"{name}{PARAMFILE_EXT}"
            hook = self.custom_save_hooks.get(name)
            if hook is None:
                hook = get_default_hook(obj, DEFAULT_SAVE_HOOKS)
            if hook is None:
                raise RuntimeError(
                    f"Don't know how to save {type(obj)} ('{name}'): "
                    "register a default hook or add a custom one."
                )
            body = _main_only_body(hook)
            if body is None:
                hook(obj, path)  # on every process, as SpeechBrain does
            elif if_main_process():
                # The hook's own body, without its broadcast of the result:
                # a write that fails then leaves no process waiting in a
                # collective, and the error is shared once, below.
                with MainProcessContext():
                    body(obj, path)

    def _replace(self, partial, final):
        """Rename the written folder to its final name, durably."""
        old = None
        if final.exists():
            # A custom name saved again: move the old one aside first (a
            # folder cannot be renamed over a non-empty one).
            old = final.with_name(PARTIAL_PREFIX + "old+" + final.name)
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
        os.rename(partial, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old)

    def _write_error(self, err, partial):
        """Remove the partial folder; the message of the failed write."""
        written = 0
        if partial is not None and Path(partial).is_dir():
            written = _folder_size(partial)
            shutil.rmtree(partial, ignore_errors=True)
        previous = self._newest_complete()
        need = written
        if previous is not None:
            need = max(need, _folder_size(previous.path))
        free = shutil.disk_usage(self.checkpoints_dir).free
        if _is_disk_full(err):
            what = "no space left on device"
        else:
            # torch.save reports a full disk as a RuntimeError.
            full = " (the disk is probably full)" if free < need else ""
            what = f"{type(err).__name__}: {err}{full}"
        kept = (
            f"The previous checkpoint {previous.path} is intact."
            if previous is not None
            else "There is no previous checkpoint."
        )
        return (
            f"Could not write a checkpoint in {self.checkpoints_dir}: "
            f"{what}. {_megabytes(free)} free there; a checkpoint needs "
            f"about {_megabytes(need)} (at least "
            f"{_megabytes(max(need - free, 0))} more). {kept} Free some "
            "space (or point save_folder elsewhere) and run the same "
            "command again: it resumes from the previous checkpoint."
        )

    def _newest_complete(self):
        ckpts = sorted(self.list_checkpoints(), key=ckpt_recency)
        return ckpts[-1] if ckpts else None

    # ------------------------------------------------------------------
    # Listing and deleting

    def list_checkpoints(self):
        """Complete ``CKPT+`` folders; those with an unreadable
        ``CKPT.yaml`` are left out and kept in ``self.unreadable``.

        Returns
        -------
        list of Checkpoint
            The checkpoints.
        """
        checkpoints, self.unreadable = [], []
        for folder in self._list_checkpoint_dirs():
            try:
                with open(folder / METAFNAME, encoding="utf-8") as handle:
                    meta = yaml.safe_load(handle)
                if not isinstance(meta, dict) or "unixtime" not in meta:
                    raise ValueError("no unixtime")
            except (OSError, ValueError, yaml.YAMLError) as err:
                reason = str(err).splitlines()[0] if str(err) else err
                self.unreadable.append((folder, f"{METAFNAME}: {reason}"))
                continue
            paramfiles = {
                p.stem: p for p in folder.iterdir() if p.suffix == PARAMFILE_EXT
            }
            checkpoints.append(Checkpoint(folder, meta, paramfiles))
        return checkpoints

    def delete_checkpoints(
        self,
        *,
        num_to_keep=1,
        min_keys=None,
        max_keys=None,
        importance_keys=[ckpt_recency],
        ckpt_predicate=None,
        verbosity=logging.INFO,
    ):
        """SpeechBrain's deletion, which never deletes the
        ``keep_newest`` newest checkpoints.

        Arguments
        ---------
        num_to_keep, min_keys, max_keys, importance_keys, ckpt_predicate,
        verbosity
            As in ``Checkpointer.delete_checkpoints``.
        """
        if num_to_keep < 0:
            raise ValueError("Number of checkpoints to keep must be >= 0.")
        keys = [{"min_key": key} for key in min_keys or []]
        keys.extend({"max_key": key} for key in max_keys or [])
        # save_and_keep_only appends ckpt_recency to its default list at
        # every call (a shared default): count each key once.
        unique = list(dict.fromkeys(importance_keys))
        keys.extend({"importance_key": key} for key in unique)
        # As SpeechBrain: each key keeps its num_to_keep best among the
        # checkpoints that the predicate lets go; the newest are kept too.
        newest = sorted(self.list_checkpoints(), key=ckpt_recency)
        protected = set(newest[-self.keep_newest :] if self.keep_newest else [])
        candidates = set()
        for key in keys:
            ranked = self.find_checkpoints(ckpt_predicate=ckpt_predicate, **key)
            candidates.update(ranked)
            protected.update(ranked[:num_to_keep])
        # Sync before and after deleting, as SpeechBrain does, so that no
        # process saves meanwhile.
        ddp_barrier()
        for ckpt in candidates - protected:
            Checkpointer._delete_checkpoint(ckpt, verbosity=verbosity)
        ddp_barrier()

    # ------------------------------------------------------------------
    # Recovery

    def recover_if_possible(
        self,
        importance_key=None,
        max_key=None,
        min_key=None,
        ckpt_predicate=None,
    ):
        """Load the best usable checkpoint; skip damaged ones.

        The order is SpeechBrain's (the newest, or the best by a key).
        Each candidate is verified (:func:`checkpoint_problem`); a damaged
        one logs a warning naming it and the reason, and the next
        candidate is tried. The first sound one is loaded; an error while
        loading it (a checkpoint of another configuration) is raised.

        Arguments
        ---------
        importance_key, max_key, min_key, ckpt_predicate
            As in ``Checkpointer.recover_if_possible``.

        Returns
        -------
        Checkpoint or None
            The loaded checkpoint; None when there was none (or, with
            ``allow_fresh_start``, none usable).

        Raises
        ------
        NoUsableCheckpointError
            Checkpoints exist, none is usable and ``allow_fresh_start``
            is False.
        """
        self._remove_partial_folders()
        candidates = self.find_checkpoints(
            importance_key=importance_key,
            max_key=max_key,
            min_key=min_key,
            ckpt_predicate=ckpt_predicate,
        )
        rejected = list(self.unreadable)
        for folder, reason in self.unreadable:
            logger.warning("Skipping damaged checkpoint %s: %s", folder, reason)
        for ckpt in candidates:
            reason = checkpoint_problem(ckpt.path)
            if reason is None:
                # Its files are the ones written: an error while loading
                # them (e.g. a recipe with other classes or shapes) is
                # not damage, and an older checkpoint would not help.
                self.load_checkpoint(ckpt)
                return ckpt
            logger.warning(
                "Skipping damaged checkpoint %s: %s", ckpt.path, reason
            )
            rejected.append((ckpt.path, reason))
        if not rejected:
            logger.info("Would load a checkpoint here, but none found yet.")
            return None
        listing = "\n".join(f"  {path}: {why}" for path, why in rejected)
        if self.allow_fresh_start:
            logger.warning(
                "No usable checkpoint in %s; starting from the beginning "
                "(allow_fresh_start). Found:\n%s",
                self.checkpoints_dir,
                listing,
            )
            return None
        raise NoUsableCheckpointError(
            f"No usable checkpoint in {self.checkpoints_dir}; found "
            f"{len(rejected)} damaged:\n{listing}\nRemove or repair them, "
            "or pass --allow_fresh_start=True to start from the beginning."
        )

    def _remove_partial_folders(self):
        """Delete folders of saves that were cut short (main process)."""
        if not if_main_process():
            return
        for folder in self.checkpoints_dir.glob(PARTIAL_PREFIX + "*"):
            logger.warning(
                "Removing %s: a checkpoint whose write was cut short", folder
            )
            shutil.rmtree(folder, ignore_errors=True)


def _main_only_body(hook):
    """The function inside SpeechBrain's ``main_process_only``, or None.

    That wrapper runs the function on the main process and broadcasts its
    result, a collective call per file. (Recognised by the wrapper's code
    name; another wrapper is called as it is.)
    """
    code = getattr(hook, "__code__", None)
    if code is not None and code.co_name == "main_proc_wrapped_func":
        return getattr(hook, "__wrapped__", None)
    return None


def _is_disk_full(err):
    return getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
