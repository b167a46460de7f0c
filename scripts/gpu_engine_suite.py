#!/usr/bin/env python3
"""Engine-only timings of the GPU targets in one process (scripts/gpu_pipeline.sh engine).

Per model: CUDA EP with I/O binding, with and without CUDA graphs, at batch 1 / seq 128 and batch 32 /
seq 512, the CPU FP32 baseline at batch 1 / seq 128, and PyTorch eager FP32 on the GPU. Every record is
printed as it lands (results/<gpu>/engine.jsonl keeps them all).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from perf import torch_models
from perf.engine_timing import file_size_mib, session_memory_mib, time_engines
from perf.inputs import batch_arrays
from toolkit.repository.lookup import engine_file, engine_input_names, find_tokenizer

REPOSITORY = Path("model_repository")
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
MODELS = sys.argv[2].split(",") if len(sys.argv) > 2 else ["bert-base-uncased", "gpt2", "minilm"]
FACTORIES = {"bert-base-uncased": torch_models.bert_base_uncased, "gpt2": torch_models.gpt2, "minilm": torch_models.minilm}

started = time.time()
for model in MODELS:
    plans = [
        dict(batch_size=1, seq_len=128, runs=200, cuda_graph=False, cpu_baseline_runs=20, torch_factory=FACTORIES[model]),
        dict(batch_size=1, seq_len=128, runs=200, cuda_graph=True, cpu_baseline_runs=0),
        dict(batch_size=32, seq_len=512, runs=30, cuda_graph=False, cpu_baseline_runs=0, torch_factory=FACTORIES[model]),
        dict(batch_size=32, seq_len=512, runs=30, cuda_graph=True, cpu_baseline_runs=0),
    ]
    for plan in plans:
        records, path = time_engines(model, REPOSITORY, OUT, device="cuda", warmup=10, **plan)  # type: ignore[arg-type]
        for record in records:
            brief = {k: record.get(k) for k in ("key", "status", "median_ms", "p90_ms", "gpu_memory_mib", "error")}
            print(json.dumps({"cuda_graph": plan["cuda_graph"], **brief})[:600], flush=True)
    # GPU memory each engine takes once loaded and run at batch 32 / seq 512 (one engine at a time).
    for precision in ("fp32", "fp16", "hybrid"):
        engine = engine_file(REPOSITORY, model, precision, "onnxruntime")
        names = engine_input_names(REPOSITORY, model, precision, "onnxruntime")
        inputs = batch_arrays(find_tokenizer(REPOSITORY, model, None), names, 32, 512)
        try:
            memory = session_memory_mib(engine, inputs, "cuda") if engine else None
            print(
                json.dumps(
                    {"memory": f"{model}|{precision}", "gpu_memory_mib": memory, "file_mib": file_size_mib(engine) if engine else None}
                ),
                flush=True,
            )
        except Exception as error:  # a failing engine is reported, the others still measured
            print(json.dumps({"memory": f"{model}|{precision}", "error": str(error)[:300]}), flush=True)
    print(f"# {model} done after {time.time() - started:.0f} s", flush=True)
