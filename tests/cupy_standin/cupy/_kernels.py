"""CuPy's user kernels in the CPU stand-in: they keep their source and signature (so a kernel
module can be imported and its launch arithmetic tested) and refuse to run, since nothing here
compiles CUDA."""
from __future__ import annotations


class _Kernel:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.name = kwargs.get("name") or (args[-1] if args and isinstance(args[-1], str) else "")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"the CPU stand-in for CuPy cannot run the CUDA kernel "
                                  f"{self.name!r}: run it on a GPU")


class ElementwiseKernel(_Kernel):
    """ElementwiseKernel(in_params, out_params, operation, name, ...)."""


class ReductionKernel(_Kernel):
    """ReductionKernel(in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name, ...)."""


class RawKernel(_Kernel):
    """RawKernel(code, name, options=(), ...)."""

    def __init__(self, code, name, *args, **kwargs):
        super().__init__(code, name, *args, **kwargs)
        self.code, self.name = code, name


class RawModule:
    def __init__(self, code=None, **kwargs):
        self.code = code

    def get_function(self, name):
        return RawKernel(self.code, name)
