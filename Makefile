# `make demo` and `make test` work on a fresh machine: each creates .venv if it is missing and
# installs what it needs (the demo: the library alone; the tests: the library, the test extras and
# the reference implementation).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.audiodiff-demo
TEST_STAMP := $(VENV)/.audiodiff-test

.PHONY: install install-test demo test clean

$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(TEST_STAMP): $(DEMO_STAMP)
	$(PY) -m pip install -q -e '.[test]'
	# The reference implementation, used only by the equivalence tests (its metadata pulls CUDA torch).
	$(PY) -m pip install -q --no-deps sgmse==0.1.2
	touch $@

install: $(DEMO_STAMP)

install-test: $(TEST_STAMP)

demo: install
	$(VENV)/bin/audiodiff demo

test: install-test
	$(VENV)/bin/ruff check audiodiff tests eval data_prep
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
