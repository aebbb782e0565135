"""Benchmarks of tinygrad_hw against PyTorch (outside the test suite); see benchmarks/README.md
for how to run them and docs/benchmarks.md for the results."""
