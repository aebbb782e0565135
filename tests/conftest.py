"""Shared fixtures: the backend under test and hypothesis profiles (helpers for real CIFAR-10
images and the example scripts are in helpers.py; the comparisons with PyTorch are
:mod:`tinygrad_hw.testing`).

Tests that can run on CuPy take the ``backend`` fixture. It is 'numpy' by default; set
TINYGRAD_HW_BACKEND=cupy (on a GPU machine) to run the same tests on CuPy, or
TINYGRAD_HW_TEST_BACKENDS=numpy,cupy to run them on both. With PYTHONPATH=tests/cupy_standin as
well, ``cupy`` is the CPU stand-in for CuPy (a test tool; make test's second run): tests that need
real CUDA skip there (helpers.on_cupy_standin).
"""
import os

import pytest
from hypothesis import HealthCheck, settings

import tinygrad_hw as hw

# The backend fixture only names a backend; it is safe to share across generated examples.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("dev", max_examples=15, deadline=None,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_BACKENDS = [b.strip() for b in os.environ.get(
    "TINYGRAD_HW_TEST_BACKENDS", os.environ.get("TINYGRAD_HW_BACKEND", "numpy")).split(",") if b.strip()]


@pytest.fixture(params=_BACKENDS)
def backend(request):
    """The name of the backend a test runs on; also made the default for the test's duration."""
    previous = hw.get_backend().name
    hw.set_backend(request.param)
    yield request.param
    hw.set_backend(previous)


@pytest.fixture(autouse=True)
def _restore_library_state():
    """Each test starts with the default dtype float32 and grad mode on, whatever the last did."""
    dtype = hw.get_default_dtype()
    yield
    hw.set_default_dtype(dtype)
    assert hw.is_grad_enabled(), "a test left grad mode off"

