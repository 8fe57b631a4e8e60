# The book's two commands:
#   make test   set up .venv if needed, run pytest: unit tests + nbval over every notebook
#   make book   set up .venv if needed, execute every notebook (papermill), build the HTML book
# Everything is installed at the exact versions in .ci/constraints.txt.

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
CONSTRAINTS := .ci/constraints.txt
STAMP       := $(VENV)/.installed
NOTEBOOKS   := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# The book's pinned CPU numerics (avpet_core/reproducibility.py): every number a chapter checks is
# made with ATen, MKL and oneDNN on their AVX2 code paths and one intra-op thread, so it comes out
# the same on every x86-64 machine. Set here, before any Python starts: the variables only work
# when set before torch initialises, and papermill's and nbval's kernels inherit them.
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := AVX2,STRICT
export ONEDNN_MAX_CPU_ISA := AVX2
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export PYTHONHASHSEED := 0
# Says 'this is the Makefile's pinned .venv': tests/test_environment.py checks installed == pinned only here.
export AVPET_PINNED_ENV := 1
# Processes side by side: one thread each, so on two cores two chapters run at once (pytest-xdist
# keeps each notebook's cells in one worker, in order).
JOBS        ?= 2
# The robustness run: every training chapter again with seeds disjoint from the committed ones.
ROBUST_SEEDS ?= [10, 11, 12]
TRAINING    := $(filter notebooks/05% notebooks/06% notebooks/07% notebooks/08% notebooks/09%,$(NOTEBOOKS))

.PHONY: help venv pretrain test unit nbval book notebooks html robustness clean floors

help:
	@echo "make test   unit tests and nbval over every notebook (creates .venv on first use)"
	@echo "make book   execute every notebook with papermill, then build _build/html"
	@echo "make unit | nbval | notebooks | html   the parts of the above"
	@echo "make robustness   re-execute the training chapters with seeds $(ROBUST_SEEDS) (outside CI)"
	@echo "make floors       unit tests at the lowest versions pyproject.toml allows (outside CI)"
	@echo "make clean  remove _build (keeps .venv)"

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[book,test]"
	@touch $@

# The offline micro-ViT and micro text encoder are trained once (about seven and one and a half minutes
# on one core) and cached; the notebooks load them.
# AVPET_UNPINNED=1: avpet keeps the numeric environment make gives it (the pins above, or what the command
# line overrides, e.g. `make test ATEN_CPU_CAPABILITY=default`), so it caches the backbones the notebooks load.
pretrain: $(STAMP)
	AVPET_UNPINNED=1 $(BIN)/avpet pretrain
	AVPET_UNPINNED=1 $(BIN)/avpet pretrain --text

PYTEST_NB := --nbval-lax --nbval-current-env --nbval-cell-timeout=3600 -p no:cacheprovider -n $(JOBS) --dist loadscope

test: pretrain
	$(BIN)/python -m pytest tests $(NOTEBOOKS) $(PYTEST_NB)

unit: $(STAMP)
	$(BIN)/python -m pytest tests -p no:cacheprovider -n $(JOBS) --dist loadscope

nbval: pretrain
	$(BIN)/python -m pytest $(NOTEBOOKS) $(PYTEST_NB)

book: notebooks html

# Re-makes the book: every notebook in place and, under the pins, the training chapters' reference runs
# (avpet_core/references/*.json, written by avpet_core.verification.verify).
notebooks: pretrain
	@printf '%s\n' $(NOTEBOOKS) | xargs -P $(JOBS) -I NB sh -c \
		'echo "papermill NB"; AVPET_WRITE_REFERENCE=1 $(BIN)/papermill --cwd notebooks --kernel python3 --no-progress-bar NB NB' || exit 1

# Executes into _build/robustness (the committed notebooks are left alone); fails if an assert fails.
robustness: pretrain
	@mkdir -p _build/robustness
	@printf '%s\n' $(TRAINING) | xargs -P $(JOBS) -I NB sh -c \
		'echo "papermill NB with SEEDS=$(ROBUST_SEEDS)"; $(BIN)/papermill --cwd notebooks --kernel python3 --no-progress-bar \
		 -y "SEEDS: $(ROBUST_SEEDS)" NB _build/robustness/$$(basename NB)' || exit 1
	@echo "robustness: every training chapter's asserts hold with seeds $(ROBUST_SEEDS)"

html: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@test -f _build/html/index.html && echo "Book built: _build/html/index.html"

clean:
	rm -rf _build

# Outside CI: the lower bounds of pyproject.toml, tested. A separate venv, _build/venv-floors, gets every direct
# dependency at the lowest version pyproject allows (uv's --resolution lowest-direct, from PyPI; its
# torch is a CUDA build of several GB) and runs the unit tests (not the notebooks, whose checked
# numbers need the pins) with the pinned numerics; the installed == pinned checks skip there.
floors:
	@test -x _build/venv-floors/bin/python || $(PYTHON) -m venv _build/venv-floors
	_build/venv-floors/bin/python -m pip install --quiet --upgrade uv
	_build/venv-floors/bin/python -m uv pip install --python _build/venv-floors/bin/python --resolution lowest-direct -e ".[test]"
	_build/venv-floors/bin/python -m uv pip list --python _build/venv-floors/bin/python | grep -iE '^(torch|torchaudio|torchvision|timm|numpy|av|soundfile|safetensors|pytest|ipykernel|matplotlib) '
	AVPET_PINNED_ENV=0 _build/venv-floors/bin/python -m pytest tests -p no:cacheprovider -n $(JOBS) --dist loadscope
