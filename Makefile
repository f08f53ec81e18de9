# `make demo` and `make test` work on a fresh machine: each creates .venv if it is missing and installs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.audiodiff-installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# The reference implementation, used only by the equivalence tests (its metadata pulls CUDA torch).
	$(PY) -m pip install -q --no-deps sgmse==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/audiodiff demo

test: install
	$(VENV)/bin/ruff check audiodiff tests
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
