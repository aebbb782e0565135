"""Benchmarks of tinygrad_hw against PyTorch (outside the test suite); see benchmarks/README.md."""
