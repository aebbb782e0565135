"""Choosing which images a run sees: fixed subsets and derived seeds."""
from __future__ import annotations

import numpy

__all__ = ["fixed_subset", "derived_seed"]


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


def derived_seed(seed: int, stream: int) -> int:
    """A seed for random stream number ``stream`` of a run seeded with ``seed``, independent of
    the run's other streams (NumPy's SeedSequence; 63 bits)."""
    return int(numpy.random.SeedSequence([int(seed), int(stream)]).generate_state(1, numpy.uint64)[0] >> 1)
