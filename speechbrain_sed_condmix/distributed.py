"""Helpers for distributed (DDP) training and its audit.

Rank queries and object gathering (one process: no-ops), the state
fingerprint that compares EMA teachers across ranks and checkpoints, the
broadcast of the student's buffers before each EMA update, DDP wrapping
that keeps the teacher and idle modules out, and the per-epoch audit of
the ranks' training shards (``ddp_train_check.json``).

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import hashlib
import json
import logging
from pathlib import Path

import torch
from speechbrain.utils.distributed import if_main_process
from torch.nn import SyncBatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, IterableDataset

from speechbrain_sed_condmix.teacher import unwrap_module as _unwrap

logger = logging.getLogger(__name__)


def world_size():
    """Number of processes of the initialised process group (else 1).

    Example
    -------
    >>> world_size()
    1
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def gather_objects(obj):
    """Every rank's ``obj``, in rank order, on every rank.

    Without a process group (one process) this is ``[obj]``.

    Example
    -------
    >>> gather_objects({"a": 1})
    [{'a': 1}]
    """
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def state_fingerprint(module):
    """SHA-256 of a module's state dict (names, dtypes, shapes, bytes).

    Two modules with bit-identical parameters and buffers have the same
    fingerprint; a checkpoint's ``teacher.ckpt`` loaded with ``torch.load``
    gives the fingerprint of the saved teacher.

    Arguments
    ---------
    module : torch.nn.Module or dict
        A module or a state dict.

    Returns
    -------
    str
        Hex digest.

    Example
    -------
    >>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> _ = b.load_state_dict(a.state_dict())
    >>> state_fingerprint(a) == state_fingerprint(b.state_dict())
    True
    >>> with torch.no_grad():
    ...     _ = b.bias.add_(1e-7)
    >>> state_fingerprint(a) == state_fingerprint(b)
    False
    """
    state = module if isinstance(module, dict) else module.state_dict()
    digest = hashlib.sha256()
    for name, value in state.items():
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def broadcast_buffers(module):
    """Give every rank the main process's floating-point buffers.

    BatchNorm running statistics are updated by each rank's own forward
    (on CPU, where ``SyncBatchNorm`` is not available, they differ
    between ranks); DDP would broadcast rank 0's at the next forward. The
    teacher averages them right after a step, so they are broadcast first:
    the EMA is then identical on every rank.

    Arguments
    ---------
    module : torch.nn.Module
        The (possibly DDP-wrapped) module.

    Example
    -------
    >>> broadcast_buffers(torch.nn.BatchNorm1d(2))  # one process: nothing
    """
    if world_size() == 1:
        return
    buffers = [b for b in _unwrap(module).buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1) for b in buffers])
    torch.distributed.broadcast(flat, src=0)
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


def wrap_trained_modules(modules, device, device_type, idle, **ddp_kwargs):
    """Wrap the trained modules in DDP; keep the teacher and ``idle`` out.

    ``SyncBatchNorm`` only on CUDA (it does not run on CPU). A module
    without trainable parameters (the EMA teacher) or that gets no
    gradient (``idle``, e.g. contrastive heads whose term weighs 0, which
    DDP would wait for) stays unwrapped. The teacher's weights are then
    broadcast from rank 0, so that the EMA is identical on all ranks even
    if the initial copies differed.

    Arguments
    ---------
    modules : torch.nn.ModuleDict
        The Brain's modules; wrapped in place.
    device : str
        The rank's device.
    device_type : str
        ``cuda`` or ``cpu``.
    idle : set
        Names of the modules to leave unwrapped.
    **ddp_kwargs : dict
        Passed to ``DistributedDataParallel``.
    """
    for name, module in modules.items():
        if name in idle or name == "teacher":
            continue
        if not any(p.requires_grad for p in module.parameters()):
            continue
        if device_type == "cuda":
            module = SyncBatchNorm.convert_sync_batchnorm(module)
            device_ids = [device]
        else:
            device_ids = None
        modules[name] = DistributedDataParallel(
            module, device_ids=device_ids, **ddp_kwargs
        )
    if world_size() > 1 and "teacher" in modules:
        for tensor in modules["teacher"].state_dict().values():
            torch.distributed.broadcast(tensor, src=0)


def audit_training_shards(train_clips, teacher, epoch, output_folder):
    """Under DDP, check and record the epoch's shards and teachers.

    Gathers each rank's training clips and teacher fingerprint; logs an
    error if two ranks trained on the same clip id or if the teachers
    differ, and writes both to ``<output_folder>/ddp_train_check.json``
    (main process). One process: nothing.

    Arguments
    ---------
    train_clips : list
        The clip ids this rank trained on in the epoch.
    teacher : torch.nn.Module
        This rank's EMA teacher.
    epoch : int
        The epoch.
    output_folder : str or Path
        Where the JSON goes.
    """
    if world_size() == 1:
        return
    parts = gather_objects(
        {"clips": train_clips, "teacher": state_fingerprint(_unwrap(teacher))}
    )
    seen, shared = set(), set()
    for part in parts:
        shared |= seen & set(part["clips"])
        seen |= set(part["clips"])
    if shared:
        # An error in the log, not a stop: two subsets may share ids.
        logger.error(
            "Epoch %s: ranks trained on clips with the same ids %s",
            epoch,
            sorted(shared)[:10],
        )
    fingerprints = [part["teacher"] for part in parts]
    if len(set(fingerprints)) > 1:
        logger.error("Epoch %s: the ranks' EMA teachers differ", epoch)
    if if_main_process():
        out = Path(output_folder) / "ddp_train_check.json"
        out.write_text(
            json.dumps(
                {
                    "epoch": epoch,
                    "world_size": len(parts),
                    "train_clips": [part["clips"] for part in parts],
                    "teacher_fingerprint": fingerprints,
                },
                indent=1,
            )
        )


def shard_for_evaluation(dataset, loader_kwargs):
    """Under DDP, give an evaluation loader a shard of the set per rank.

    Each rank scores a shard (``DistributedSampler`` without shuffling);
    ``ScoreCollector.gather`` merges the scores. The sampler pads the last
    shard with repeated clips, which the gathering (keyed by clip id)
    drops. One process, an iterable dataset or a loader with its own
    sampler: ``loader_kwargs`` is left as it is.

    Arguments
    ---------
    dataset : Dataset
        The validation or test set.
    loader_kwargs : dict
        DataLoader options; ``sampler`` is set in place.

    Example
    -------
    >>> kwargs = {}
    >>> shard_for_evaluation(list(range(4)), kwargs)  # one process
    >>> kwargs
    {}
    """
    if (
        world_size() > 1
        and not isinstance(dataset, IterableDataset)
        and loader_kwargs.get("sampler") is None
        and loader_kwargs.get("batch_sampler") is None
    ):
        loader_kwargs["sampler"] = DistributedSampler(dataset, shuffle=False)
