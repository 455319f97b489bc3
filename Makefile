# charrnn pipelines. `make demo` and `make test` work from a fresh clone with only Python 3.11+.
#   make prepare CORPUS=path/to/text.txt             -> data/<name>/
#   make train   CORPUS=... CONFIG=lstm              -> runs/<name>/   (CONFIG: a file or a shipped config name)
#   make sample / make eval                          -> runs/<name>/sample.txt, eval.json
#   make train RESUME=1                              continue a run stopped before its end (Ctrl-C)
# A target is remade when the settings it was made with change (CORPUS contents, CONFIG contents,
# PREPARE_FLAGS, TRAIN_FLAGS, PRIME, EVAL_SPLIT), never because of a file's timestamp alone; the
# settings are remembered under .make/. A run directory that already holds a run is never replaced
# unless FORCE=1 is given: sample and eval use the run that is there.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORPUS ?= shakespeare
NAME ?= $(basename $(notdir $(CORPUS)))
DATA ?= data/$(NAME)
CONFIG ?= tiny
RUN ?= runs/$(NAME)
PRIME ?=
PREPARE_FLAGS ?=
TRAIN_FLAGS ?=
EVAL_SPLIT ?= test
FORCE ?=
RESUME ?=
DEMO_STEPS ?= 1000
SHARED_CORPUS ?= ../shared/data/tinyshakespeare.txt
BENCH_VENV ?= .venv-bench
BENCH_FLAGS ?=
CORPUS_FILES := $(filter-out shakespeare,$(CORPUS))
CONFIG_FILE = $(firstword $(wildcard $(CONFIG)) charrnn/configs/$(CONFIG).yaml)
MEMORY := .make
RUN_MEMORY = $(MEMORY)/$(RUN)
DATA_MEMORY = $(MEMORY)/$(DATA)
# the model sample and eval use: the run that is there, else one trained now (an ensemble's is the stamp)
RUN_MODEL = $(or $(wildcard $(RUN)/last.npz),$(RUN_MEMORY)/trained)

PREPARE_SETTINGS = corpus=$(CORPUS) flags=$(PREPARE_FLAGS)
TRAIN_SETTINGS = data=$(DATA) config=$(CONFIG) $(shell sha256sum $(CONFIG_FILE) 2>/dev/null | cut -c1-64) flags=$(TRAIN_FLAGS)
SAMPLE_SETTINGS = prime=$(PRIME)
EVAL_SETTINGS = split=$(EVAL_SPLIT)
# write $$SETTINGS into the target only when it differs, so its time marks a change of settings
REMEMBER = @mkdir -p $(@D); printf '%s\n' "$$SETTINGS" | cmp -s - $@ || printf '%s\n' "$$SETTINGS" > $@

.PHONY: help install test torture demo prepare train sample eval bench bench-mpi bench-serve bench-memory bench-nanogpt shakespeare shakespeare-2h clean FORCE
.DELETE_ON_ERROR:

help:
	@echo "make demo      install, then prepare/train/sample/eval on the built-in corpus (DEMO_STEPS=$(DEMO_STEPS))"
	@echo "make test      install with the test extra and run the test suite"
	@echo "make torture   the fault suite with many more iterations (minutes)"
	@echo "make prepare|train|sample|eval CORPUS=file CONFIG=name-or-file RUN=runs/x [FORCE=1]"
	@echo "make train RESUME=1    continue a run stopped before its end (Ctrl-C)"
	@echo "make shakespeare   the 30-minute quality run on $(SHARED_CORPUS)"
	@echo "make shakespeare-2h  the 2-hour quality run (both also score val adapting: dynamic eval + n-gram)"
	@echo "make bench     speed against PyTorch CPU (installs torch==2.13.0 in $(BENCH_VENV))"
	@echo "make bench-mpi threads against MPI ranks on this machine, and a projection across nodes"
	@echo "make bench-serve   requests/s and latency of charrnn serve on the demo model (and runs/shakespeare)"
	@echo "make bench-memory  how far back an RNN, an LSTM and a GRU remember (trains three models)"
	@echo "make bench-nanogpt NANOGPT=path   nanoGPT's shakespeare_char on this CPU for 30 minutes"

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

torture: $(VENV)/.installed-test
	CHARRNN_TORTURE=1 $(BIN)/python -m pytest tests/faults/test_faults.py tests/faults/test_checkpoint_fuzz.py

$(DATA_MEMORY)/prepare.settings: export SETTINGS = $(PREPARE_SETTINGS)
$(DATA_MEMORY)/prepare.settings: FORCE
	$(REMEMBER)

$(DATA)/meta.json: $(CORPUS_FILES) $(DATA_MEMORY)/prepare.settings | $(VENV)/.installed-demo
	$(BIN)/charrnn prepare $(CORPUS) --out $(DATA) --force $(PREPARE_FLAGS)
	touch $@

# what the data is, by content: a re-prepared but identical corpus does not retrain anything
$(DATA_MEMORY)/data.id: $(DATA)/meta.json
	@mkdir -p $(@D); cmp -s $< $@ || cp $< $@

prepare: $(DATA)/meta.json

$(RUN_MEMORY)/train.settings: export SETTINGS = $(TRAIN_SETTINGS)
$(RUN_MEMORY)/train.settings: FORCE
	$(REMEMBER)

# what the run in RUN was started with, to tell an unfinished run from one made with other settings
STARTED = $(RUN_MEMORY)/started.settings
$(RUN_MEMORY)/trained: $(RUN_MEMORY)/train.settings $(DATA_MEMORY)/data.id
	@{ test ! -f $(RUN)/last.npz && test ! -f $(RUN)/ensemble.json; } || test -n "$(FORCE)$(RESUME)" || { \
		if cmp -s $(STARTED) $(RUN_MEMORY)/train.settings; then \
			echo "make: $(RUN) holds an unfinished run with these settings (it was stopped before its end);" \
				"continue it with RESUME=1, or replace it with FORCE=1" >&2; \
		elif test -f $(STARTED); then \
			echo "make: $(RUN) already holds a run made with other settings;" \
				"give RUN=runs/another for a new run, or FORCE=1 to replace it" >&2; \
		else \
			echo "make: $(RUN) already holds a run that this Makefile did not start;" \
				"give RUN=runs/another for a new run, or FORCE=1 to replace it" >&2; \
		fi; exit 1; }
	@test -z "$(RESUME)" || test -z "$(FORCE)" || { echo "make: RESUME=1 continues the run and FORCE=1 replaces it; give one of them" >&2; exit 1; }
ifeq ($(RESUME),)
	cp $(RUN_MEMORY)/train.settings $(STARTED)
	$(BIN)/charrnn train $(DATA) --config $(CONFIG) --out $(RUN) $(if $(FORCE),--force) $(TRAIN_FLAGS)
else
	$(BIN)/charrnn train --out $(RUN) --resume $(TRAIN_FLAGS)
endif
	touch $@

train: $(RUN_MEMORY)/trained

$(RUN_MEMORY)/sample.settings: export SETTINGS = $(SAMPLE_SETTINGS)
$(RUN_MEMORY)/sample.settings: FORCE
	$(REMEMBER)

$(RUN)/sample.txt: $(RUN_MODEL) $(RUN_MEMORY)/sample.settings
	$(BIN)/charrnn sample $(RUN) --seed 1 --length 600 --temperature 0.8 $(if $(PRIME),--prime "$(PRIME)") > $@

sample: $(RUN)/sample.txt
	@cat $<

$(RUN_MEMORY)/eval.settings: export SETTINGS = $(EVAL_SETTINGS)
$(RUN_MEMORY)/eval.settings: FORCE
	$(REMEMBER)

$(RUN)/eval.json: $(RUN_MODEL) $(RUN_MEMORY)/eval.settings
	$(BIN)/charrnn eval $(RUN) --split $(EVAL_SPLIT) --json > $@

eval: $(RUN)/eval.json
	@cat $<

DEMO = CORPUS=shakespeare CONFIG=demo RUN=runs/demo TRAIN_FLAGS="--max-steps $(DEMO_STEPS) $(TRAIN_FLAGS)" PRIME="ROMEO:"

# the demo's run is its own: new settings retrain it (FORCE=1) and print fresh results
demo:
	$(MAKE) train $(DEMO) FORCE=1
	$(MAKE) eval sample $(DEMO)

SHAKESPEARE_TEXT := $(if $(filter command line environment,$(origin CORPUS)),$(CORPUS),$(SHARED_CORPUS))
shakespeare_run = $(if $(filter command line environment,$(origin RUN)),$(RUN),runs/$(1))
# the n-gram order of the adaptive eval, chosen on the first 20,000 val characters (BENCHMARKS.md)
NGRAM_ORDER ?= 8

# the 30-minute and the 2-hour recipes; each also scores val adapting (dynamic evaluation mixed with
# an n-gram model, the figure to set beside compressors) into RUN/eval-adaptive.json
shakespeare shakespeare-2h: $(VENV)/.installed-plot
	@test -f $(SHAKESPEARE_TEXT) || { echo "no corpus at $(SHAKESPEARE_TEXT); give CORPUS=path/to/tinyshakespeare.txt"; exit 1; }
	$(MAKE) train eval sample CORPUS=$(SHAKESPEARE_TEXT) NAME=tinyshakespeare CONFIG=$@ \
		RUN=$(call shakespeare_run,$@) PREPARE_FLAGS="--val-frac 0.1 --test-frac 0" EVAL_SPLIT=val PRIME="ROMEO:"
	$(BIN)/charrnn plot $(call shakespeare_run,$@) -o $(call shakespeare_run,$@)/curve.png --force
	$(BIN)/charrnn eval $(call shakespeare_run,$@) --split val --dynamic --ngram $(NGRAM_ORDER) --json > $(call shakespeare_run,$@)/eval-adaptive.json
	@cat $(call shakespeare_run,$@)/eval-adaptive.json

$(BENCH_VENV)/.installed: pyproject.toml
	test -d $(BENCH_VENV) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[mkl]' torch==2.13.0
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m charrnn.bench.training $(BENCH_FLAGS)

bench-mpi: $(VENV)/.installed-test
	$(BIN)/python -m charrnn.bench.mpi $(SHARED_CORPUS) $(BENCH_FLAGS)

bench-serve: $(VENV)/.installed-test
	test -f runs/demo/best.npz || $(MAKE) demo
	$(BIN)/python -m charrnn.bench.serve runs/demo $(if $(wildcard runs/shakespeare/best.npz runs/shakespeare/ensemble.json),runs/shakespeare) $(BENCH_FLAGS)

bench-nanogpt: $(BENCH_VENV)/.installed
	@test -n "$(NANOGPT)" || { echo "give NANOGPT=path/to/a/checkout/of/karpathy/nanoGPT"; exit 1; }
	$(BENCH_VENV)/bin/python -m charrnn.bench.nanogpt $(NANOGPT) $(SHARED_CORPUS) $(BENCH_FLAGS)

bench-memory: $(VENV)/.installed-plot
	@test -f $(SHARED_CORPUS) || { echo "no corpus at $(SHARED_CORPUS); give SHARED_CORPUS=path/to/tinyshakespeare.txt"; exit 1; }
	$(BIN)/python -m charrnn.bench.memory $(SHARED_CORPUS) --runs runs --plot runs/memory.png $(BENCH_FLAGS)

clean:
	rm -rf runs data/*/ $(MEMORY)
