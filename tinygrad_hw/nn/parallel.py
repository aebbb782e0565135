"""Data parallelism: :class:`DistributedDataParallel`, PyTorch's DDP on :mod:`tinygrad_hw.distributed`."""
from __future__ import annotations

import contextlib
import time

from .. import distributed as dist
from ..autograd import engine, no_grad
from ..tensor import Tensor
from .module import Module

__all__ = ["DistributedDataParallel"]


class _Bucket:
    """Parameters of one backend and dtype whose gradients travel in one flat buffer."""

    def __init__(self, be, dtype):
        self.be, self.dtype, self.params, self.slices, self.numel = be, dtype, [], [], 0

    def add(self, p):
        self.params.append(p)
        self.slices.append((self.numel, self.numel + p.data.size))
        self.numel += p.data.size

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class DistributedDataParallel(Module):
    """Wraps ``module`` so that ``loss.backward()`` leaves every rank with the gradients averaged
    over all ranks; any optimizer then takes the same step everywhere.

    * At construction the parameters and buffers of rank 0 are broadcast to every rank, so all
      ranks start from the same model.
    * The parameters are grouped, in reverse order (the order their gradients become ready), by
      backend and dtype into buckets of at most ``bucket_cap_mb`` megabytes. When the gradients
      of a bucket and of every bucket before it are ready, they are copied into one flat buffer,
      summed over the ranks with one ``all_reduce``, divided by the world size, and each
      parameter's ``.grad`` becomes its slice of that buffer. The engine stores gradients at the
      end of the backward walk, so the reductions run after the walk (through the engine's
      post-accumulate-grad hooks), not overlapped with it.
    * ``with ddp.no_sync():`` skips the averaging for gradient accumulation: the first
      ``backward()`` after the block averages everything accumulated.
    * Every parameter that requires grad must receive a gradient in each synchronised backward;
      otherwise its bucket could not be reduced and the backward raises, naming it (PyTorch's
      ``find_unused_parameters`` is not implemented). ``create_graph=True`` is not supported.
    * Buffers (BatchNorm's running statistics) stay per rank during training -- each rank
      normalises with its own batch's statistics -- and :meth:`average_buffers` averages the
      floating ones over the ranks (integer ones are taken from rank 0). It runs when the
      wrapper is switched to eval mode, and the training loop calls it before a checkpoint.
      (PyTorch instead broadcasts rank 0's buffers at every forward.)

    ``comm_seconds`` accumulates the time spent in the gradient reductions (copies included).
    ``state_dict()`` keys carry the ``module.`` prefix, as in PyTorch; save ``ddp.module``'s.
    """

    def __init__(self, module: Module, *, bucket_cap_mb: float = 25.0, broadcast_buffers: bool = True):
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError("DistributedDataParallel: call tinygrad_hw.distributed."
                               "init_process_group() first")
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected a Module, got {type(module).__name__}")
        self.module = module
        self.world_size = dist.get_world_size()
        self.broadcast_buffers = broadcast_buffers
        self.comm_seconds = 0.0
        with no_grad():
            for t in list(module.parameters()) + (list(module.buffers()) if broadcast_buffers else []):
                dist.broadcast(t, src=0)
        params = [p for p in module.parameters() if p.requires_grad]
        self.buckets = _buckets(list(reversed(params)), int(bucket_cap_mb * 1024 * 1024))
        self._bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b.params}
        self._names = {id(p): name for name, p in module.named_parameters()}
        self._sync = True
        self._reset()
        self._hooks = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in params]

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally (no communication) inside the block."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous

    def train(self, mode: bool = True):
        if not mode and self.training:
            self.average_buffers()
        return super().train(mode)

    def average_buffers(self) -> None:
        """Every rank's floating buffers replaced by their mean over the ranks (integer ones by
        rank 0's): one model to evaluate and to save. A collective: call it on every rank."""
        with no_grad():
            for b in self.module.buffers():
                if b.dtype.kind == "f":
                    dist.all_reduce(b, dist.ReduceOp.AVG)
                else:
                    dist.broadcast(b, src=0)

    # -- the reduction ----------------------------------------------------------------------------
    def _reset(self):
        self._waiting = [len(b.params) for b in self.buckets]
        self._next = 0  # buckets are reduced strictly in order, the same on every rank
        self._started = False

    def _grad_ready(self, p):
        if not self._sync:
            return
        if p.grad.requires_grad:
            raise RuntimeError("DistributedDataParallel does not support backward(create_graph=True)")
        if not self._started:
            self._started = True
            engine.queue_callback(self._finish)
        self._waiting[self._bucket_of[id(p)]] -= 1
        while self._next < len(self.buckets) and self._waiting[self._next] == 0:
            self._reduce(self.buckets[self._next])
            self._next += 1

    def _reduce(self, bucket):
        start = time.perf_counter()
        flat = bucket.be.xp.empty(bucket.numel, dtype=bucket.dtype)
        for p, (a, b) in zip(bucket.params, bucket.slices):
            flat[a:b] = p.grad.data.reshape(-1)
        dist.all_reduce(Tensor._make(flat, bucket.be), dist.ReduceOp.AVG)
        for p, (a, b) in zip(bucket.params, bucket.slices):
            p.grad = Tensor._make(flat[a:b].reshape(p.data.shape), bucket.be)
        self.comm_seconds += time.perf_counter() - start

    def _finish(self):
        unreduced = self._next < len(self.buckets)
        missing = [self._names.get(id(p), "?") for b in self.buckets[self._next:] for p in b.params
                   if p.grad is None]
        self._reset()
        if unreduced:
            raise RuntimeError(
                "DistributedDataParallel: these parameters received no gradient in this "
                f"backward(): {', '.join(missing) or '(gradients set to None during backward)'}; "
                "their gradients could not be averaged over the ranks. Every parameter that "
                "requires grad must take part in the loss on every rank (freeze the others with "
                "requires_grad_(False) before wrapping the model).")

    def extra_repr(self):
        return (f"world_size={self.world_size}, buckets={len(self.buckets)} "
                f"({', '.join(f'{b.nbytes / 1e6:.2f} MB' for b in self.buckets)})")


def _buckets(params, cap_bytes):
    """Buckets in the given order: one open bucket per (backend, dtype), closed at ``cap_bytes``."""
    done, open_ = [], {}
    for p in params:
        key = (p._be.name, p.data.dtype)
        bucket = open_.get(key)
        if bucket is None:
            bucket = open_[key] = _Bucket(p._be, p.data.dtype)
        bucket.add(p)
        if bucket.nbytes >= cap_bytes:
            done.append(open_.pop(key))
    return done + list(open_.values())
