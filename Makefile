# make test               set up .venv-onedl (if needed) and run the test suite
# make test STACK=upstream the same on the upstream OpenMMLab stack (.venv-upstream)
# make demo               set up and run the CLIP-ES demo on bundled sample photos
# make setup              only create/refresh the virtualenv
STACK ?= onedl
VENV ?= .venv-$(STACK)
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-all demo bench clean

$(VENV)/.installed: requirements/$(STACK).txt requirements/common.txt setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade-strategy only-if-needed -r requirements/$(STACK).txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

test-all: setup
	$(PY) -m pytest -q --runslow $(PYTEST_ARGS) tests

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

bench: setup
	$(PY) benchmarks/bench_generate.py

clean:
	rm -rf .venv-onedl .venv-upstream work_dirs
