# Two commands set everything up on a fresh clone:
#   make report   virtual environment, install, Jupyter kernel, the quick profile of the three studies, the site
#   make test     the same set-up, then the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0: the CPU wheel on CI machines; on a CUDA machine pip takes the matching CUDA build.
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= quick
PYTEST_ARGS ?=

.PHONY: setup report test smoke clean lab

setup: $(VENV)/.seglib-installed

$(VENV)/.seglib-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name seglib --display-name "Python (seglib)"
	@touch $@

report: setup
	$(BIN)/seglib report --profile $(PROFILE)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

smoke: setup
	$(BIN)/seglib report --profile smoke

lab: setup
	$(BIN)/python -m pip install --quiet -e ".[lab]"
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build _site .quarto
