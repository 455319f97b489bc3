# charrnn pipelines. `make demo` and `make test` work from a fresh clone with only Python 3.11+.
# Targets depend on files, so `make` reruns only what changed:
#   make prepare CORPUS=path/to/text.txt    -> data/<name>/
#   make train   CORPUS=... CONFIG=configs/lstm.yaml   -> runs/<name>/
#   make sample / make eval                  -> runs/<name>/sample.txt, eval.json

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORPUS ?= shakespeare
NAME ?= $(basename $(notdir $(CORPUS)))
DATA ?= data/$(NAME)
CONFIG ?= configs/tiny.yaml
RUN ?= runs/$(NAME)
PRIME ?=
PREPARE_FLAGS ?=
TRAIN_FLAGS ?=
EVAL_SPLIT ?= test
DEMO_STEPS ?= 1500
SHARED_CORPUS ?= ../shared/data/tinyshakespeare.txt
BENCH_VENV ?= .venv-bench
BENCH_FLAGS ?=
CORPUS_FILES := $(filter-out shakespeare,$(CORPUS))

.PHONY: help install test demo prepare train sample eval bench shakespeare clean

help:
	@echo "make demo      install, then prepare/train/sample/eval on the built-in corpus (DEMO_STEPS=$(DEMO_STEPS))"
	@echo "make test      install with the test extra and run the test suite"
	@echo "make prepare|train|sample|eval CORPUS=file CONFIG=configs/x.yaml RUN=runs/x"
	@echo "make shakespeare   the 30-minute quality run on $(SHARED_CORPUS)"
	@echo "make bench     speed against PyTorch CPU (installs torch==2.13.0 in $(BENCH_VENV))"

$(VENV)/.installed-test: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-demo: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[shakespeare]'
	touch $@

$(VENV)/.installed-plot: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[plot]'
	touch $@

install: $(VENV)/.installed-test $(VENV)/.installed-demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

$(DATA)/meta.json: $(CORPUS_FILES) | $(VENV)/.installed-demo
	$(BIN)/charrnn prepare $(CORPUS) --out $(DATA) --force $(PREPARE_FLAGS)

prepare: $(DATA)/meta.json

$(RUN)/last.npz: $(DATA)/meta.json $(CONFIG)
	$(BIN)/charrnn train $(DATA) --config $(CONFIG) --out $(RUN) --force $(TRAIN_FLAGS)

train: $(RUN)/last.npz

$(RUN)/sample.txt: $(RUN)/last.npz
	$(BIN)/charrnn sample $(RUN) --seed 1 --length 600 --temperature 0.8 $(if $(PRIME),--prime "$(PRIME)") > $@

sample: $(RUN)/sample.txt
	@cat $<

$(RUN)/eval.json: $(RUN)/last.npz
	$(BIN)/charrnn eval $(RUN) --split $(EVAL_SPLIT) --json > $@

eval: $(RUN)/eval.json
	@cat $<

demo:
	$(MAKE) eval sample CORPUS=shakespeare CONFIG=configs/tiny.yaml RUN=runs/demo \
		TRAIN_FLAGS="--max-steps $(DEMO_STEPS) $(TRAIN_FLAGS)" PRIME="ROMEO:"

SHAKESPEARE_TEXT := $(if $(filter command line environment,$(origin CORPUS)),$(CORPUS),$(SHARED_CORPUS))

shakespeare: $(VENV)/.installed-plot
	@test -f $(SHAKESPEARE_TEXT) || { echo "no corpus at $(SHAKESPEARE_TEXT); give CORPUS=path/to/tinyshakespeare.txt"; exit 1; }
	$(MAKE) eval sample CORPUS=$(SHAKESPEARE_TEXT) NAME=tinyshakespeare CONFIG=configs/shakespeare.yaml \
		RUN=runs/shakespeare PREPARE_FLAGS="--val-frac 0.1 --test-frac 0" EVAL_SPLIT=val PRIME="ROMEO:"
	$(BIN)/charrnn plot runs/shakespeare -o runs/shakespeare/curve.png

$(BENCH_VENV)/.installed: pyproject.toml
	test -d $(BENCH_VENV) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q -e . torch==2.13.0
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m charrnn.bench $(BENCH_FLAGS)

clean:
	rm -rf runs data/*/
