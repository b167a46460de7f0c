"""Measurements on the GPU machine that inform serving choices; run by ``scripts/gpu_pipeline.sh experiments``.

Not part of the grid or the report: each answers one question with numbers from this machine, and lands
in ``<out>/<gpu>/experiments.json`` (also printed):

- ``attention_kernels``: ONNX Runtime's CUDA attention kernel (EP option ``sdpa_kernel``, 0 = its own
  choice) for the BERT-base FP16 engine at a few shapes, each output compared with the default kernel's.
- ``request_path``: where one served request's time goes in ``DeviceRunner.run`` at batch 1, length 128:
  input copies, the graph replay, the device sync, the output copy.
- ``tokenizer``: the Python tokenizer's time for one 128-token text on this host's CPU.
- ``cpu_threads``: the CPU FP32 baseline with ONNX Runtime's default threads and with every logical core.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.fidelity import compare_arrays
from perf.engine_timing import time_callable, time_for
from perf.environment import device_info
from perf.inputs import batch_arrays, load_tokenizer, text_samples
from toolkit.backends.common.cuda_graphs import DeviceRunner, cuda_session
from toolkit.engines.onnxrt import session_for
from toolkit.repository.lookup import engine_input_names, find_tokenizer, require_engine_file

# ONNX Runtime's AttentionBackend bits (attention_kernel_options.h); 0 lets it choose.
KERNELS = {0: "default", 1: "flash", 2: "efficient", 4: "trt_fused", 8: "cudnn_flash", 16: "math", 32: "trt_flash"}
SHAPES = ((1, 128), (8, 128), (32, 512))
GRAPH_TOKENS = 4096  # as the grid: CUDA graphs up to this many tokens


def attention_kernels(path: Path, tokenizer: Path, names: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    reference: dict[tuple[int, int], np.ndarray] = {}
    for bits, label in KERNELS.items():
        try:
            session, refused = cuda_session(str(path), provider_options={"sdpa_kernel": str(bits)})
        except Exception as error:
            rows.append({"kernel": label, "sdpa_kernel": bits, "status": f"session failed: {str(error).splitlines()[0][:160]}"})
            continue
        runner = DeviceRunner(session, max_graphs=0 if refused else 1 << 10)
        for batch, seq in SHAPES:
            feeds = batch_arrays(tokenizer, names, batch, seq)
            row: dict[str, Any] = {"kernel": label, "sdpa_kernel": bits, "batch_size": batch, "seq_len": seq}
            try:
                slot = runner.slot(feeds, graph=runner.max_graphs > 0 and batch * seq <= GRAPH_TOKENS)
                timing = time_for(lambda: runner.launch(slot), target_seconds=0.3)  # noqa: B023 (called at once)
                output = runner.fetch(slot)[0]
                row.update(status="ok", median_ms=round(timing.median_ms, 4), min_ms=round(timing.min_ms, 4))
                if bits == 0:
                    reference[(batch, seq)] = output
                elif (batch, seq) in reference:
                    metrics = compare_arrays(reference[(batch, seq)], output, feeds["attention_mask"])
                    row.update(cosine_min_vs_default=metrics.cosine_min, max_abs_vs_default=metrics.max_abs)
            except Exception as error:
                row["status"] = f"failed: {str(error).splitlines()[0][:160]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
        runner = session = None  # free this kernel's session before the next one
    return rows


def request_path(path: Path, tokenizer: Path, names: list[str]) -> dict[str, Any]:
    session, _ = cuda_session(str(path))
    runner = DeviceRunner(session)
    wanted = ["sentence_embedding"]
    samples = [batch_arrays(tokenizer, names, 1, 128)] + [
        {name: np.roll(array, shift, axis=1) for name, array in batch_arrays(tokenizer, names, 1, 128).items()} for shift in range(1, 8)
    ]
    slot = runner.slot(samples[0], graph=True)
    for _ in range(5):
        runner.run(samples[0], wanted)
    step = iter(range(1 << 30))

    def full() -> None:
        runner.run(samples[next(step) % len(samples)], wanted)

    parts = {
        "run (copy in, replay, sync, copy out)": full,
        "launch (replay + synchronize_outputs)": lambda: runner.launch(slot),
        "replay without synchronize_outputs": lambda: session.run_with_iobinding(slot.binding, slot.run_options),
        "synchronize_outputs alone": lambda: slot.binding.synchronize_outputs(),
        "copy inputs in (update_inplace)": lambda: runner.load(slot, samples[1]),
        "copy one output out": lambda: runner.fetch(slot, wanted),
    }
    result: dict[str, Any] = {name: round(time_callable(fn, runs=300, warmup=20).median_ms * 1000, 1) for name, fn in parts.items()}
    # Is the sync needed? Outputs read right after the replay, without it, against outputs read after it.
    agree = True
    for feeds in samples:
        runner.load(slot, feeds)
        session.run_with_iobinding(slot.binding, slot.run_options)
        unsynced = runner.fetch(slot, wanted)[0].copy()
        runner.launch(slot)
        agree &= bool(np.array_equal(unsynced, runner.fetch(slot, wanted)[0]))
    result["unit"] = "us (median)"
    result["outputs_without_sync_equal"] = agree
    return result


def tokenizer_time(tokenizer: Path) -> dict[str, Any]:
    text = text_samples(tokenizer, 128, 1)[0]
    tok = load_tokenizer(tokenizer)
    tok.no_padding()
    timing = time_callable(lambda: tok.encode_batch([text]), runs=500, warmup=20)
    return {"tokens": len(tok.encode(text).ids), "encode_batch_us": round(timing.median_ms * 1000, 1)}


def cpu_threads(fp32: Path, tokenizer: Path, names: list[str]) -> dict[str, Any]:
    feeds = batch_arrays(tokenizer, names, 1, 128)
    result: dict[str, Any] = {"logical_cpus": os.cpu_count()}
    for label, threads in (("ort_default_threads_ms", None), ("all_logical_threads_ms", os.cpu_count())):
        session = session_for(fp32, "cpu", threads=threads)
        result[label] = round(time_callable(lambda: session.run(None, feeds), runs=30, warmup=3).median_ms, 3)  # noqa: B023
    return result


@click.command()
@click.option("--repository", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True)
@click.option("--model", default="bert-base-uncased", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
def main(repository: Path, model: str, out: Path) -> None:
    """Run the experiments on MODEL's engines and write OUT/<gpu>/experiments.json."""
    tokenizer = find_tokenizer(repository, model, None)
    names = list(engine_input_names(repository, model, "fp16", "onnxruntime"))
    fp16, fp32 = require_engine_file(repository, model, "fp16"), require_engine_file(repository, model, "fp32")
    record = {
        "model": model,
        "device_info": device_info(),
        "code": os.environ.get("TOOLKIT_COMMIT"),
        "request_path": request_path(fp16, tokenizer, names),
        "tokenizer": tokenizer_time(tokenizer),
        "cpu_threads": cpu_threads(fp32, tokenizer, names),
    }
    print(json.dumps(record, indent=1), flush=True)
    record["attention_kernels"] = attention_kernels(fp16, tokenizer, names)
    path = out / record["device_info"]["name"] / "experiments.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
