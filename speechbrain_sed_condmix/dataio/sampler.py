"""Batches with a fixed number of items from each data source.

Semi-supervised SED trains on batches such as ``[12 strong, 12 synthetic,
24 weak, 48 unlabeled]``: every batch holds exactly that many items of each
subset, in that order. As in the DCASE recipes, the epoch ends when the source
that runs out first is exhausted.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


class MultiSourceBatchSampler(Sampler):
    """Yield batches of global indices into a ``ConcatDataset`` of sources.

    Each batch is the concatenation, in source order, of ``batch_sizes[i]``
    items of source ``i``. Every epoch draws a fresh permutation of each
    source from ``(seed, epoch, source)``, so the order is reproducible and
    independent of the other sources.

    Under distributed training every rank takes a disjoint shard of each
    source (positions ``rank, rank + world, ...`` of the shared permutation),
    and all ranks agree on the number of batches. The sampler shards by
    itself, so it must not be wrapped in a ``DistributedSampler``
    (``SEDBrain`` takes care of that).

    Arguments
    ---------
    source_lengths : sequence of int or of datasets
        Length of each source (or the sources themselves), in the order in
        which they are concatenated.
    batch_sizes : sequence of int
        Items of each source per batch (per rank). A 0 leaves a source out.
    seed : int
        Base seed of the permutations.
    epoch : int
        Starting epoch; ``set_epoch`` changes it.
    shuffle : bool
        Draw random permutations (``False`` keeps the natural order).
    num_replicas : int, optional
        World size; read from ``torch.distributed`` when initialised.
    rank : int, optional
        This process's rank; read from ``torch.distributed`` when initialised.

    Example
    -------
    >>> sampler = MultiSourceBatchSampler([4, 6], [1, 2], seed=0)
    >>> len(sampler)
    3
    >>> batches = list(sampler)
    >>> [all(i < 4 for i in b[:1]) and all(i >= 4 for i in b[1:])
    ...  for b in batches]
    [True, True, True]
    """

    def __init__(
        self,
        source_lengths,
        batch_sizes,
        seed=42,
        epoch=0,
        shuffle=True,
        num_replicas=None,
        rank=None,
    ):
        lengths = [n if isinstance(n, int) else len(n) for n in source_lengths]
        if len(lengths) != len(batch_sizes):
            raise ValueError(
                f"{len(lengths)} sources but {len(batch_sizes)} batch sizes"
            )
        if any(int(b) < 0 for b in batch_sizes) or sum(batch_sizes) == 0:
            raise ValueError(f"Invalid batch sizes {list(batch_sizes)}")
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} not in [0, {num_replicas})")
        self.lengths = lengths
        self.batch_sizes = [int(b) for b in batch_sizes]
        self.offsets = [sum(lengths[:i]) for i in range(len(lengths))]
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.shuffle = shuffle
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self._check_lengths()

    def _check_lengths(self):
        for i, (n, bs) in enumerate(zip(self.lengths, self.batch_sizes)):
            if bs and n // self.num_replicas < bs:
                raise ValueError(
                    f"Source {i} has {n} items, fewer than "
                    f"{bs} per batch x {self.num_replicas} rank(s): "
                    "lower its batch size or add data"
                )

    def set_epoch(self, epoch):
        """Set the epoch, which changes the permutations.

        Arguments
        ---------
        epoch : int
            The epoch number.
        """
        self.epoch = int(epoch)

    def shard_indices(self, source):
        """Return this rank's local indices of ``source`` for this epoch.

        Arguments
        ---------
        source : int
            Source number.

        Returns
        -------
        list of int
            Indices local to the source (add ``offsets[source]`` for global).

        Example
        -------
        >>> a = MultiSourceBatchSampler([5], [1], num_replicas=2, rank=0)
        >>> b = MultiSourceBatchSampler([5], [1], num_replicas=2, rank=1)
        >>> sorted(a.shard_indices(0) + b.shard_indices(0))
        [0, 1, 2, 3, 4]
        """
        n = self.lengths[source]
        if self.shuffle:
            generator = torch.Generator()
            # A distinct, reproducible stream per (seed, epoch, source).
            generator.manual_seed(
                self.seed + 1_000_003 * self.epoch + 7_919 * source
            )
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        return order[self.rank :: self.num_replicas]

    def __len__(self):
        """Number of batches per epoch, identical on every rank."""
        return min(
            (n // self.num_replicas) // bs
            for n, bs in zip(self.lengths, self.batch_sizes)
            if bs
        )

    def __iter__(self):
        """Yield lists of global indices, one list per batch."""
        shards = [
            self.shard_indices(i) if bs else []
            for i, bs in enumerate(self.batch_sizes)
        ]
        for step in range(len(self)):
            batch = []
            for source, bs in enumerate(self.batch_sizes):
                start = step * bs
                offset = self.offsets[source]
                batch.extend(
                    offset + i for i in shards[source][start : start + bs]
                )
            yield batch
