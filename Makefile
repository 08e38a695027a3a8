# minillama: course and library tasks. `make help` lists them.
#
# Variables (override on the command line, e.g. `make course MINILLAMA_PROFILE=cpu`):
#   PYTHON            interpreter that creates the venv             (python3)
#   TORCH_SPEC        torch requirement, installed before the rest  (torch==2.13.0: a CPU
#                     build; an unpinned torch pulls a ~5 GB CUDA build)
#   VENV              where the virtual environment lives           (.venv)
#   MINILLAMA_PROFILE cpu | full, passed to the notebooks by `course` (unset: each notebook
#                     picks full on CUDA, cpu otherwise); `test` always uses cpu
#   NOTEBOOK_TIMEOUT  seconds per notebook for `course`            (1800)
#   CELL_TIMEOUT      seconds per cell for the notebook tests      (600)
#   CHAPTERS          `course` and `smoke` run only these, e.g. CHAPTERS="ch01 ch02" (all)

PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV ?= .venv
NOTEBOOK_TIMEOUT ?= 1800
CELL_TIMEOUT ?= 600
CHAPTERS ?=

PY := $(VENV)/bin/python
PIP ?= $(PY) -m pip
STAMP := $(VENV)/.installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
# Notebooks run under nbval in the same pytest call as tests/, in the venv's own kernel.
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT) notebooks

.PHONY: help venv test course smoke lab exercises clean distclean

help:
	@echo "make venv       create $(VENV) and install torch ($(TORCH_SPEC)) + minillama[dev]"
	@echo "make test       ruff, exercises in sync, pytest tests/ + notebooks (cpu profile)"
	@echo "make course     run every notebook headless into build/notebooks/"
	@echo "make smoke      the full profile's code of every notebook on a CPU at smoke sizes,"
	@echo "                asserts off, into build/smoke/ (slow, not part of test)"
	@echo "make lab        open the notebooks in JupyterLab"
	@echo "make exercises  regenerate exercises/ from solutions/"
	@echo "make clean      remove build outputs and caches (distclean: the venv too)"

venv: $(STAMP)

# Reinstalls only when pyproject.toml is newer than the stamp (or the venv is new).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install '$(TORCH_SPEC)'
	$(PIP) install -e '.[dev]'
	touch $@

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) scripts/make_exercises.py --check
ifeq ($(NOTEBOOKS),)
	@echo "note: no notebooks/*.ipynb yet; testing tests/ only"
endif
	MPLBACKEND=Agg MINILLAMA_PROFILE=cpu $(PY) -m pytest tests $(if $(NOTEBOOKS),$(NBVAL))

# MINILLAMA_PROFILE reaches the notebooks through the environment when it is set.
course: $(STAMP)
	MPLBACKEND=Agg $(PY) scripts/run_course.py --timeout $(NOTEBOOK_TIMEOUT) $(CHAPTERS)

# The full profile's code path of every chapter, runnable on a CPU: full-size models at
# profiles.py's smoke sizes (a step or two, a few records), with the asserts such a run
# cannot meet stripped (-O). Its own base and sweep cache (absolute: the notebooks run in
# notebooks/), its own output folder; the committed notebooks are not touched.
smoke: $(STAMP)
	MPLBACKEND=Agg MINILLAMA_PROFILE=full MINILLAMA_SMOKE=1 PYTHONOPTIMIZE=1 \
	MINILLAMA_FULL_DIR=$(CURDIR)/build/smoke-full \
	$(PY) scripts/run_course.py --out build/smoke --timeout $(NOTEBOOK_TIMEOUT) $(CHAPTERS)

# Jupyter refuses to start as root unless told; containers often run as root.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

exercises: $(STAMP)
	$(PY) scripts/make_exercises.py

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
