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
# One thread count everywhere, so checked outputs come out the same on every machine of a kind.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export PYTHONHASHSEED := 0

.PHONY: help venv pretrain test unit nbval book notebooks html clean

help:
	@echo "make test   unit tests and nbval over every notebook (creates .venv on first use)"
	@echo "make book   execute every notebook with papermill, then build _build/html"
	@echo "make unit | nbval | notebooks | html   the parts of the above"
	@echo "make clean  remove _build (keeps .venv)"

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[book,test]"
	@touch $@

# The offline micro-ViT is trained once (about two minutes on two cores) and cached; the notebooks load it.
pretrain: $(STAMP)
	$(BIN)/avpet pretrain

test: pretrain
	$(BIN)/python -m pytest tests $(NOTEBOOKS) --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest tests -p no:cacheprovider

nbval: pretrain
	$(BIN)/python -m pytest $(NOTEBOOKS) --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

book: notebooks html

notebooks: pretrain
	@for nb in $(NOTEBOOKS); do \
		echo "papermill $$nb"; \
		$(BIN)/papermill --cwd notebooks --kernel python3 --no-progress-bar "$$nb" "$$nb" || exit 1; \
	done

html: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@test -f _build/html/index.html && echo "Book built: _build/html/index.html"

clean:
	rm -rf _build
