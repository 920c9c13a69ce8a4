# Two commands are the contract (see README.md):
#   make quickstart   set up .venv and train the offline quickstart recipe
#   make test         set up .venv and run the test suite
PYTHON ?= python3
# The torch build to install when the environment has none; a torch that is already importable is kept.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart test test-fast

# --system-site-packages lets a machine's own torch (CUDA or not) satisfy the requirement untouched.
$(BIN)/gpt2-adapt: setup.cfg pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[test]"
	touch $@

setup: $(BIN)/gpt2-adapt

quickstart: setup
	$(BIN)/gpt2-adapt train recipes/quickstart.toml --overwrite

test: setup
	$(BIN)/python -m pytest

# The quick loop: everything but the tests marked slow (real processes, torchrun, benchmarks).
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"
