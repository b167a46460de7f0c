# Serve and measure transformer models on Triton. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REPOSITORY ?= model_repository
SWEEP ?= default
GRPC_PORT ?= 8001
# Address Triton listens on: 127.0.0.1 (this host only); 0.0.0.0 exposes it, with the key in $TRITON_ADMIN_KEY.
LISTEN ?= 127.0.0.1
SERVE_FLAGS ?=
TO ?=
MODEL ?=
ANALYZE_FLAGS ?=
GRID_MODELS ?= minilm
GRID_DEVICE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
# make k8s: REPOSITORY must then be an s3:// URL; the others are optional (toolkit/deploy/k8s.py has the defaults).
IMAGE_TAG ?=
REPLICAS ?= 1
MAX_REPLICAS ?=
IMAGE ?=
NAMESPACE ?=
PODMONITOR ?=
HPA_METRIC ?= cpu
export PYTHONPATH := $(CURDIR)
# A command against the Triton server on GRPC_PORT: the one `make serve` started, else one started on REPOSITORY for
# the command and stopped after it (it says which); `python -m toolkit.serving run -h`.
WITH_SERVER = $(PY) -m toolkit.serving run --repository $(REPOSITORY) --grpc-port $(GRPC_PORT) --

.DEFAULT_GOAL := help
.PHONY: help setup demo build build-minilm build-gpt2 serve stop status push infer fidelity perf analyze grid report k8s test lint typecheck clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	# Type stubs only: their own dependencies are TensorRT placeholders that cannot install here.
	$(PY) -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
	@touch $@

setup: $(VENV)/.installed ## create .venv with pinned dependencies, and libb64 for perf_analyzer
	@if ! ldconfig -p 2>/dev/null | grep -q libb64.so.0d; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then (apt-get update -qq && apt-get install -y -qq libb64-0d) >/dev/null; \
	  else echo "perf_analyzer needs libb64: sudo apt-get install -y libb64-0d"; fi; fi

demo: build-minilm ## the main job offline: build MiniLM, serve it, query it, measure fidelity (PASS/FAIL per precision), stop
	$(WITH_SERVER) $(MAKE) --no-print-directory infer fidelity

build: build-minilm build-gpt2 ## build the default models offline (MiniLM-L6 real weights, GPT-2 random weights)

build-minilm: setup ## build the real MiniLM-L6 (BERT architecture) into model_repository/
	$(PY) build_engines.py --models minilm --repository $(REPOSITORY)

build-gpt2: setup ## build GPT-2 (124M architecture, seeded random weights) into model_repository/
	$(PY) build_engines.py --models gpt2 --random-weights --repository $(REPOSITORY)

serve: setup ## start Triton on REPOSITORY (a folder or s3://...) listening on LISTEN (SERVER=docker for NVIDIA's container)
	$(PY) -m toolkit.serving start --repository $(REPOSITORY) --grpc-port $(GRPC_PORT) --listen $(LISTEN) $(SERVE_FLAGS)

stop: ## stop the server started by `make serve`
	$(PY) -m toolkit.serving stop

status: ## is the server up?
	$(PY) -m toolkit.serving status

push: setup ## upload REPOSITORY to TO=s3://bucket/path (or s3://host:port/bucket/path): new versions aside, then one config switch per model
	@test -n "$(TO)" || { echo "give the destination: make push TO=s3://bucket/path"; exit 2; }
	$(PY) -m toolkit.repository push --repository $(REPOSITORY) --to $(TO)

infer: setup ## send one sentence to every MiniLM precision over gRPC (on the running server, else one started for it)
	$(WITH_SERVER) $(PY) -m client infer "Triton serves transformers fast." --models minilm --precisions fp32,fp16,hybrid --url localhost:$(GRPC_PORT)

fidelity: setup ## fp16/hybrid vs the FP32 reference on random ids and shipped text, then PASS/FAIL per precision (server as infer)
	$(WITH_SERVER) $(PY) -m client fidelity --models minilm --precisions fp32,fp16,hybrid --batch-sizes 1,8 --seq-lens 32,128 --inputs random,text --concurrency 1 --url localhost:$(GRPC_PORT)

# SWEEP=load / load-cpu: many single-text clients at rising concurrency (python -m perf load); others: python -m perf sweep.
PERF_COMMAND = $(if $(filter load%,$(SWEEP)),load,sweep)

perf: setup ## perf_analyzer sweep (SWEEP=default|gpu|paper|load|load-cpu) on the running server, else one started for it
	$(WITH_SERVER) $(PY) -m perf $(PERF_COMMAND) --plan $(SWEEP) --url localhost:$(GRPC_PORT) --repository $(REPOSITORY) --out results

analyze: setup ## Triton Model Analyzer on MODEL=minilm_fp16 (engine or ensemble) on a loopback server of its own (ports 8100-8102)
	@test -n "$(MODEL)" || { echo "name the Triton model: make analyze MODEL=minilm_fp16_onnx"; exit 2; }
	$(PY) -m perf analyze --models $(MODEL) --repository $(REPOSITORY) $(ANALYZE_FLAGS)

grid: setup ## engine-only grid of GRID_MODELS: every precision x batch x length, timed and compared with FP32 (no server)
	$(PY) -m perf grid --models $(GRID_MODELS) --device $(GRID_DEVICE) --repository $(REPOSITORY) --out results

report: ## results/REPORT.md and PNG plots from every results/<device>/ folder
	$(PY) -m perf report --out results

k8s: setup ## render the Kubernetes deployment into build/k8s (REPOSITORY=s3://bucket/path IMAGE_TAG=24.10-py3 REPLICAS=2)
	$(PY) -m toolkit.deploy k8s --repository '$(REPOSITORY)' --replicas $(REPLICAS) --hpa-metric $(HPA_METRIC) --out build/k8s \
	  $(if $(IMAGE_TAG),--image-tag '$(IMAGE_TAG)') $(if $(MAX_REPLICAS),--max-replicas $(MAX_REPLICAS)) \
	  $(if $(IMAGE),--image '$(IMAGE)') $(if $(NAMESPACE),--namespace '$(NAMESPACE)') $(if $(PODMONITOR),--pod-monitor)

test: setup ## run the tests (real Triton server, real perf_analyzer; GPU/TensorRT tests skip here)
	$(PY) -m pytest -q

lint: setup ## ruff
	$(VENV)/bin/ruff check .

typecheck: setup ## mypy, TensorRT calls checked against tensorrt-stubs
	$(VENV)/bin/mypy

clean: ## remove built engines, staging folders and caches (keeps .venv and results/)
	-$(PY) -m toolkit.serving stop 2>/dev/null
	rm -rf build $(REPOSITORY)/*/ .pytest_cache .mypy_cache .ruff_cache
