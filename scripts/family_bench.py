"""Each model family's FP16 engine against PyTorch on the same GPU, in one run: the engine alone (its runtime's
timing in a process of its own, a CUDA graph where the shape allows) at batch 1 / length 128 and batch 32 /
length 512, PyTorch eager FP16 and ``torch.compile(mode="reduce-overhead")`` FP16 of the very module the build
exported (rebuilt from the manifest), and which ops ONNX Runtime fused. Run by ``scripts/gpu_pipeline.sh
families`` on models built with ``--gpu``; writes ``<out>/<gpu>/families.jsonl``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, cast

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf import results as rf
from perf.family_report import FAMILIES_FILE
from perf.family_report import SHAPES as SHAPES_SHOWN
from perf.inputs import batch_arrays
from perf.records import FamilyBench
from perf.torch_models import torch_baseline
from toolkit.cli import CONTEXT_SETTINGS, list_option
from toolkit.cli_values import comma_items
from toolkit.environment import code_version, device_info
from toolkit.measurement.timing import Device, Row, TimingBudget, TimingJob, failure, time_callable, time_torch
from toolkit.repository.lookup import engine_input_names, find_tokenizer, read_manifest, require_engine_file
from toolkit.runtimes import DEFAULT_RUNTIME, get_runtime

SHAPES = ((1, 128), (32, 512))
BUDGET = TimingBudget(0.5, 20, 300, 5)


def engine_rows(repository: Path, model: str, device: Device) -> dict[tuple[int, int], Row]:
    """The FP16 engine timed at SHAPES in a process of its own (graphs up to 4096 tokens, as the grid)."""
    names = engine_input_names(repository, model, "fp16")
    feeds = {shape: batch_arrays(find_tokenizer(repository, model), names, *shape) for shape in SHAPES}
    job = TimingJob(require_engine_file(repository, model, "fp16"), feeds, device, BUDGET)
    return get_runtime(DEFAULT_RUNTIME).time_job(job)


def torch_rows(repository: Path, model: str, device: Device) -> dict[str, dict[tuple[int, int], Row]]:
    """PyTorch eager FP16 and torch.compile(reduce-overhead) FP16 at SHAPES (TF32 off); FP32 on the CPU (a smoke run)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    module = torch_baseline(repository, model).to(device, torch.float16 if device == "cuda" else torch.float32)
    names = engine_input_names(repository, model, "fp16")
    rows: dict[str, dict[tuple[int, int], Row]] = {"torch_eager_fp16": {}, "torch_compile_fp16": {}}
    compiled = torch.compile(module, mode="reduce-overhead")
    for shape in SHAPES:
        feeds = batch_arrays(find_tokenizer(repository, model), names, *shape)
        try:
            rows["torch_eager_fp16"][shape] = {"status": "ok", **time_torch(module, feeds, device, runs=50, warmup=5).as_dict()}
        except Exception as error:
            rows["torch_eager_fp16"][shape] = failure(error)
        rows["torch_compile_fp16"][shape] = _compiled(compiled, {n: torch.as_tensor(v).to(device) for n, v in feeds.items()}, device)
    del module, compiled
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def _compiled(compiled: Any, tensors: dict[str, Any], device: Device) -> Row:
    import torch

    def call() -> None:
        with torch.inference_mode():
            compiled(**tensors)
        if device == "cuda":
            torch.cuda.synchronize()

    try:
        started = time.perf_counter()
        call()  # compiles (seconds), recorded apart
        first_s = time.perf_counter() - started
        return {"status": "ok", "first_call_s": round(first_s, 2), **time_callable(call, runs=100, warmup=10).as_dict()}
    except Exception as error:
        return failure(error)


@click.command(context_settings=CONTEXT_SETTINGS)
@list_option("--models", required=True, help="Models built with --gpu (fp16 at least), e.g. bert-base-uncased,roberta-base.")
@click.option("--repository", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True, help="cpu: a smoke run (PyTorch in FP32).")
def main(models: str, repository: Path, out: Path, device: str) -> None:
    """Time every family's FP16 engine against PyTorch eager and torch.compile; OUT/<gpu>/families.jsonl."""
    info = device_info()
    path = out / info["name"] / FAMILIES_FILE
    stamp = {"device": info["name"], "gpu": info["gpu"], "code": code_version(), "run_id": f"{time.time():.0f}"}
    for model in comma_items(models, "--models"):
        manifest = read_manifest(repository, model) or {}
        record: dict[str, Any] = {
            "model": model, "family": (manifest.get("family") or {}).get("name"), "parameters": manifest.get("parameters"),
            "fused_ops": manifest.get("fused_ops"), **stamp,
        }  # fmt: skip
        try:
            on = cast(Device, device)
            record["engine_fp16"] = {f"b{b}_s{s}": row for (b, s), row in engine_rows(repository, model, on).items()}
            for runner, rows in torch_rows(repository, model, on).items():
                record[runner] = {f"b{b}_s{s}": row for (b, s), row in rows.items()}
            record["status"] = "ok"
        except Exception as error:
            record.update(failure(error))
        bench = FamilyBench.from_fields(record)
        rf.append_record(path, bench)
        click.echo(_line(bench))
    click.echo(f"appended to {path}")


def _line(record: FamilyBench) -> str:
    if not record.ok:
        return f"{record.model}: error {record.error}"
    parts = []
    for shape in SHAPES_SHOWN:
        values = {runner: record.median(runner, shape) for runner in ("engine_fp16", "torch_eager_fp16", "torch_compile_fp16")}
        parts.append(f"{shape}: " + ", ".join(f"{k} {v:.3f} ms" if v else f"{k} -" for k, v in values.items()))
    return f"{record.model} ({record.family}; fused {record.fused_ops}): " + "; ".join(parts)


if __name__ == "__main__":
    main()
