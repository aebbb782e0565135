# Two entry points that work on a fresh machine with only Python 3 installed:
#   make demo   -- a local virtual environment, then the CIFAR-10 example
#   make test   -- a local virtual environment, then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# A CPU build of PyTorch for the reference tests (a plain `torch` would pull a multi-GB CUDA build).
TORCH  ?= torch==2.13.0

.PHONY: demo test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo: $(BIN)/python setup.cfg
	$(BIN)/pip install --quiet -e ".[data]"
	touch $@

$(VENV)/.test: $(BIN)/python setup.cfg
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.demo
	$(BIN)/python examples/cifar_cnn.py

# The suite twice: on NumPy, then on the CPU stand-in for CuPy (tests/cupy_standin, importable as
# `cupy` only through this PYTHONPATH), so that code which works only on NumPy fails without a GPU.
test: $(VENV)/.test
	$(BIN)/python -m pytest -q -p no:cacheprovider tests
	PYTHONPATH="$(CURDIR)/tests/cupy_standin" TINYGRAD_HW_BACKEND=cupy \
	    $(BIN)/python -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) *.egg-info
