"""Choosing which images a run sees: fixed subsets, derived seeds, and each rank's share of a
data set in data-parallel training."""
from __future__ import annotations

import math

import numpy

from .. import distributed as dist

__all__ = ["fixed_subset", "derived_seed", "DistributedSampler"]


def fixed_subset(images, labels, limit, seed: int = 0):
    """The first ``limit`` images of a fixed shuffle (``seed``), in their original order; all of
    them when ``limit`` is None or not smaller than the set.

    Image-folder archives store the classes one after another, so the literal first N images
    would all be of one class; a shuffle keeps the classes mixed, and a fixed seed makes it the
    same subset in every run whatever the run's own seed is."""
    if limit is None or limit >= len(labels):
        return images, labels
    order = numpy.random.default_rng(seed).permutation(len(labels))[:int(limit)]
    order.sort()  # sorted reads from a memory-mapped cache
    return numpy.ascontiguousarray(images[order]), numpy.asarray(labels)[order]


def derived_seed(seed: int, stream: int, *substreams: int) -> int:
    """A seed for random stream number ``stream`` of a run seeded with ``seed``, independent of
    the run's other streams (NumPy's SeedSequence; 63 bits); ``substreams`` split it further
    (e.g. one per rank)."""
    entropy = [int(seed), int(stream)] + [int(s) for s in substreams]
    return int(numpy.random.SeedSequence(entropy).generate_state(1, numpy.uint64)[0] >> 1)


class DistributedSampler:
    """Rank ``rank``'s share of the sample indices ``0 .. len(dataset) - 1``, as PyTorch's
    ``torch.utils.data.distributed.DistributedSampler``: each epoch the indices are permuted
    (with ``shuffle``, from ``seed`` and the epoch: every rank must pass the same seed) and dealt
    out round-robin, rank ``r`` taking positions ``r, r + R, r + 2R, ...`` of ``R`` ranks. Every
    rank gets ``len(self)`` indices, so every rank takes the same number of steps: the list is
    padded with its own first indices up to a multiple of ``R``, or with ``drop_last`` its tail
    is dropped instead.

    ``dataset``: a data set (anything with ``len``) or its length. ``num_replicas`` and ``rank``
    default to the process group's (1 and 0 without one; PyTorch raises there). The permutation
    comes from NumPy, so the shuffled order differs from PyTorch's; the unshuffled shares are
    the same. Give it to :class:`~tinygrad_hw.data.DataLoader` as ``sampler=``: the loader sets
    its epoch (``set_epoch``) at every epoch.
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        if int(num_replicas) < 1 or not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"DistributedSampler: invalid rank {rank} for num_replicas={num_replicas}")
        self.length = int(dataset) if isinstance(dataset, (int, numpy.integer)) else len(dataset)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        if self.drop_last and self.length % self.num_replicas:
            self.num_samples = math.ceil((self.length - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(self.length / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use epoch ``epoch``'s permutation."""
        self.epoch = int(epoch)

    def indices(self) -> numpy.ndarray:
        """This rank's indices for the current epoch, as an int64 array."""
        if self.shuffle:
            rng = numpy.random.default_rng(numpy.random.SeedSequence([self.seed, self.epoch]))
            order = rng.permutation(self.length).astype(numpy.int64)
        else:
            order = numpy.arange(self.length, dtype=numpy.int64)
        if self.drop_last:
            order = order[:self.total_size]
        elif self.total_size > self.length:
            order = numpy.resize(order, self.total_size)  # repeats the list from its start
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(length={self.length}, num_replicas={self.num_replicas}, "
                f"rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, "
                f"drop_last={self.drop_last})")
