# Two commands are the contract (see README.md):
#   make quickstart   set up .venv, train the offline quickstart recipe, compare base and adapter
#   make test         set up .venv with the test extra and run the test suite
PYTHON ?= python3
# The torch build to install when the environment has none; a torch that is already importable is kept.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-test quickstart test test-fast lint fmt

# --system-site-packages lets a machine's own torch (CUDA or not) satisfy the requirement untouched.
$(BIN)/gpt2-adapt: setup.cfg pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e .
	touch $@

# The tests' own packages (pytest, the openai client, selenium, lm-evaluation-harness), apart: the
# quickstart needs none of them.
$(VENV)/.test-extra: $(BIN)/gpt2-adapt
	$(BIN)/pip install -e ".[test]"
	touch $@

setup: $(BIN)/gpt2-adapt
setup-test: $(VENV)/.test-extra

# The same prompt completed by the base and by the adapter, greedy, side by side.
QUICKSTART_PROMPT ?= def read_config(path):
quickstart: setup
	$(BIN)/gpt2-adapt train recipes/quickstart.toml --overwrite
	$(BIN)/gpt2-adapt generate --adapter quickstart --compare --greedy --repetition-penalty 1.3 \
		--max-new-tokens 40 --prompt "$(QUICKSTART_PROMPT)"

# Style by tool (pyproject.toml's [tool.ruff]): the checks first, so a style slip fails in seconds.
lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: setup-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest

# The quick loop: everything but the tests marked slow (real processes, torchrun, benchmarks).
test-fast: lint
	$(BIN)/python -m pytest -m "not slow"
