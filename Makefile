# Thin targets; every target that needs the venv creates it on first use.
#   make trace MODEL=wan2.1-t2v-14b [WORKLOAD=w003-720p] [ARGS="workload.num_frames=33"]
#   make compare [RUN=<run_id>] [ARGS="compare.tolerance=0.01"]
#   make profile MODEL=wan2.1-t2v-1.3b WORKLOAD=w001-tiny [ARGS="profile.num_layers=2"]
#   make calibrate MODEL=wan2.1-t2v-1.3b WORKLOAD=w001-tiny [ARGS="stages=[dit]"]
#   make sweep [ARGS="device=[h100-sxm,a100-sxm-80gb] workload.num_frames=[33,49,81]"]
#   make plan [GPUS=8 DEVICE=h100-sxm] [ARGS="plan.price_per_gpu_hour=2.5"]
#   make diff A=<run_id> B=<run_id>
#   make validate [ARGS="time.execution=compiled"]
#   make ingest TRACE=run.json.gz MODEL=wan2.1-t2v-1.3b WORKLOAD=480p-81f [ARGS="pipeline=diffusers device=h100-sxm"]
#   make report / make test / make lint / make bench
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL    ?= wan2.1-t2v-14b
# empty: config.yaml's w003-720p, or the model's own release video where that cannot run it
WORKLOAD ?=
ARGS     ?=
RUN      ?=
A        ?=
B        ?=
TRACE    ?=
GPUS     ?= 8
DEVICE   ?= h100-sxm

.PHONY: install report trace compare diff validate profile ingest calibrate sweep plan whatif test lint bench clean

$(STAMP): pyproject.toml setup.py Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ditmeter needs Python >= 3.11; set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch, pinned first: an unpinned torch pulls GBs of CUDA wheels.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	# The official Wan code (pure Python) for ingest's official traces and their tests; --no-deps:
	# its pipelines' requirements (flash-attn, torchvision) are not needed to build its WanModel.
	$(BIN)/python -m pip install --quiet --no-deps wan22==2.2.11
	touch $(STAMP)

install: $(STAMP)

report: $(STAMP)
	$(BIN)/ditmeter report model=$(MODEL) $(if $(WORKLOAD),workload=$(WORKLOAD)) $(ARGS)

trace: $(STAMP)
	$(BIN)/ditmeter trace model=$(MODEL) $(if $(WORKLOAD),workload=$(WORKLOAD)) $(ARGS)

profile: $(STAMP)
	$(BIN)/ditmeter profile model=$(MODEL) $(if $(WORKLOAD),workload=$(WORKLOAD)) $(ARGS)

# A torch.profiler trace of your own run (with_stack=True) joined to the module tree.
ingest: $(STAMP)
	$(BIN)/ditmeter ingest trace=$(TRACE) model=$(MODEL) $(if $(WORKLOAD),workload=$(WORKLOAD)) $(ARGS)

# Measure this machine's kernels at the model's shapes: a calibration file for calibration=PATH.
calibrate: $(STAMP)
	$(BIN)/ditmeter calibrate model=$(MODEL) $(if $(WORKLOAD),workload=$(WORKLOAD)) $(ARGS)

# Analytic predictions over a grid (ARGS="device=[h100-sxm,a100-sxm-80gb] workload.num_frames=[33,81]").
sweep: $(STAMP)
	$(BIN)/ditmeter sweep model=$(MODEL) $(if $(WORKLOAD),workload=$(WORKLOAD)) $(ARGS)

# Every plan on GPUS GPUs of DEVICE ranked (ARGS="plan.memory_limit_gib=40 plan.price_per_gpu_hour=2.5").
plan: $(STAMP)
	$(BIN)/ditmeter plan model=$(MODEL) $(if $(WORKLOAD),workload=$(WORKLOAD)) device=$(DEVICE) gpus=$(GPUS) $(ARGS)

whatif: $(STAMP)
	$(BIN)/ditmeter whatif model=$(MODEL) $(if $(WORKLOAD),workload=$(WORKLOAD)) device=$(DEVICE) $(ARGS)

# The newest traced run unless RUN=<run_id> is given.
compare: $(STAMP)
	$(BIN)/ditmeter compare $(if $(RUN),run_id=$(RUN)) $(ARGS)

# Two runs side by side (run ids under output_root, or run folders).
diff: $(STAMP)
	$(BIN)/ditmeter diff $(A) $(B) $(ARGS)

# The tool's accuracy: public measurements of real Wan runs (data/measurements/) against their prediction.
validate: $(STAMP)
	$(BIN)/ditmeter validate $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check ditmeter tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_report.py
	$(BIN)/python benchmarks/bench_trace.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
