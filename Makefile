# Two entry points that work on a fresh Debian machine (package registries
# only): `make train` and `make test`. Both set up the virtualenv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_DIR := /usr/share/datasets/fashion-mnist
RUN_DIR ?= runs/conv_fashion_mnist
EPOCHS ?= 3
PYTEST_WORKERS ?= 2

.PHONY: venv fashion-mnist train test test-unit test-fast clean

$(BIN)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed

# Fashion-MNIST from Debian's package (tfds cannot download offline).
fashion-mnist:
	@if [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

# Trains the conv VAE on Fashion-MNIST; writes checkpoints, TensorBoard logs,
# figures and a SavedModel under $(RUN_DIR). Re-running resumes.
train: venv fashion-mnist
	$(BIN)/python -m engine.main --model=conv --dataset=fashion_mnist \
	  --epochs=$(EPOCHS) --eval_every=469 --log_every=100 \
	  --model_dir=$(RUN_DIR) --export_dir=$(RUN_DIR)/export

# The whole suite, slow end-to-end tests included.
test: venv fashion-mnist
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup tests

# The unit tier: in-process tests that train no whole run (tests/conftest.py
# fails a unit test that starts a process or a run). Run it after each edit.
test-unit: venv
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup -m unit tests

# Everything but the tests marked slow.
test-fast: venv
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup -m "not slow" tests

clean:
	rm -rf $(VENV) *.egg-info
