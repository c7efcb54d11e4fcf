"""Tests of the multi-source batch sampler."""

import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from speechbrain_sed_condmix.dataio.sampler import MultiSourceBatchSampler

LENGTHS = [30, 25, 50, 97]
SIZES = [3, 2, 6, 12]


def source_of(index):
    bounds = [0, 30, 55, 105, 202]
    for s in range(4):
        if bounds[s] <= index < bounds[s + 1]:
            return s
    raise AssertionError(index)


def test_fixed_counts_and_epoch_length():
    sampler = MultiSourceBatchSampler(LENGTHS, SIZES, seed=1)
    # 30//3=10, 25//2=12, 50//6=8, 97//12=8 -> the shortest bounds it: 8
    assert len(sampler) == 8
    batches = list(sampler)
    assert len(batches) == 8
    for batch in batches:
        sources = [source_of(i) for i in batch]
        assert sources == [0] * 3 + [1] * 2 + [2] * 6 + [3] * 12
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)), "no repeats within an epoch"


def test_reproducible_per_seed_and_epoch():
    a = MultiSourceBatchSampler(LENGTHS, SIZES, seed=5)
    b = MultiSourceBatchSampler(LENGTHS, SIZES, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    c = MultiSourceBatchSampler(LENGTHS, SIZES, seed=6)
    assert list(c) != first


def test_ddp_shards_disjoint_and_cover():
    world = 2
    ranks = [
        MultiSourceBatchSampler(
            LENGTHS, SIZES, seed=3, epoch=2, num_replicas=world, rank=r
        )
        for r in range(world)
    ]
    assert len(ranks[0]) == len(ranks[1])
    for source, n in enumerate(LENGTHS):
        shards = [set(s.shard_indices(source)) for s in ranks]
        assert shards[0].isdisjoint(shards[1])
        assert shards[0] | shards[1] == set(range(n))
    # the batches the ranks actually draw are disjoint too
    drawn = [{i for b in s for i in b} for s in ranks]
    assert drawn[0].isdisjoint(drawn[1])
    # per-rank epoch length: 97 // 2 = 48 // 12 = 4 is the bound
    assert len(ranks[0]) == min(
        (n // world) // bs for n, bs in zip(LENGTHS, SIZES)
    )


def test_zero_batch_size_skips_source():
    sampler = MultiSourceBatchSampler([10, 4, 20], [2, 0, 4], seed=0)
    assert len(sampler) == 5
    for batch in sampler:
        assert not any(10 <= i < 14 for i in batch)


def test_errors():
    with pytest.raises(ValueError, match="Source 1 has 4 items"):
        MultiSourceBatchSampler([10, 4], [2, 5])
    with pytest.raises(ValueError, match="batch sizes"):
        MultiSourceBatchSampler([10, 4], [2])
    with pytest.raises(ValueError, match="rank"):
        MultiSourceBatchSampler([10], [2], num_replicas=2, rank=2)


def test_as_dataloader_batch_sampler():
    sources = [
        TensorDataset(torch.full((n,), float(k))) for k, n in enumerate([6, 9])
    ]
    data = ConcatDataset(sources)
    sampler = MultiSourceBatchSampler(sources, [2, 3], seed=0)
    loader = DataLoader(data, batch_sampler=sampler)
    batches = [b[0].tolist() for b in loader]
    assert len(batches) == 3
    assert all(b == [0, 0, 1, 1, 1] for b in batches)
