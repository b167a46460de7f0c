"""Engine-only timing: ONNX Runtime on the CPU, PyTorch eager, file sizes, the engine command."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_repo import NAME

from perf.engine_timing import time_engines, time_one_shape
from perf.inputs import batch_arrays
from toolkit.errors import BadInputError
from toolkit.measurement.timing import TimingBudget, file_size_mib, gpu_memory_used_mib, time_callable, time_torch
from toolkit.repository.lookup import engine_file


def test_time_callable_orders_statistics_when_timed() -> None:
    timing = time_callable(lambda: sum(range(1000)), runs=20, warmup=2)
    assert timing.min_ms <= timing.median_ms <= timing.p90_ms and timing.runs == 20


def test_time_callable_raises_when_runs_below_one() -> None:
    with pytest.raises(BadInputError):
        time_callable(lambda: None, runs=0)


def test_time_shape_and_torch_measure_when_on_cpu(tiny_repository: Path, tokenizer_json: Path) -> None:
    import torch

    path = engine_file(tiny_repository, NAME, "fp32", "onnxruntime")
    assert path is not None and file_size_mib(path) > 0
    inputs = batch_arrays(tokenizer_json, ("input_ids", "attention_mask", "token_type_ids"), 2, 16)
    row = time_one_shape(path, inputs, "cpu", TimingBudget.fixed(runs=5, warmup=1))
    assert row["status"] == "ok" and row["runs"] == 5 and row["warmup"] == 2 and row["median_ms"] > 0  # + time_for's sizing call
    assert "batch_size" not in row and "seq_len" not in row  # the shape is the caller's

    class Toy(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
            return input_ids.float().sum()

    assert time_torch(Toy(), inputs, runs=3, warmup=1).median_ms > 0
    assert gpu_memory_used_mib() is None or gpu_memory_used_mib() >= 0


def test_time_engines_records_errors_when_precision_missing(tiny_repository: Path, tmp_path: Path) -> None:
    import torch

    class Embedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Embedding(30522, 8)

        def forward(self, input_ids: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
            return self.table(input_ids)

    records, path = time_engines(
        NAME, tiny_repository, tmp_path, precisions=("fp32", "fp16"), batch_size=1, seq_len=16, runs=3, warmup=1, torch_factory=Embedding
    )
    status = {r.runner: r.status for r in records}
    assert status == {"onnxruntime_cpu_fp32": "ok", "onnxruntime_cpu_fp16": "error", "torch_eager_cpu_fp32": "ok"}
    assert path.is_file() and len(path.read_text().splitlines()) == 3
