"""perf_analyzer: argument rendering, CSV parsing (on a CSV captured from a real run), environment."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from perf.analyzer import (
    CSV_METRICS,
    PerfAnalyzerArgs,
    analyzer_env,
    find_perf_analyzer,
    parse_csv,
)
from toolkit.errors import BadInputError

DATA = Path(__file__).parent / "data"


def test_parse_csv_gives_ms_and_infer_per_s_when_reading_captured_csv(fixture_csv: Path) -> None:
    rows = {r["concurrency"]: r for r in parse_csv(fixture_csv)}
    assert set(rows) == {1.0, 2.0}
    first = rows[1.0]
    assert first["throughput"] == pytest.approx(1944.41)
    assert first["latency_p50"] == pytest.approx(0.931)  # 931 us in the CSV
    assert first["latency_p99"] == pytest.approx(2.328)
    assert first["server_compute_infer"] == pytest.approx(0.522)
    assert first["client_send"] == pytest.approx(0.005)


@pytest.mark.parametrize("name", ["perf_analyzer_engine_b2_c1-2.csv", "perf_analyzer_ensemble_b2_c1.csv"])
def test_csv_metrics_cover_every_column_when_reading_real_csvs(name: str) -> None:
    with (DATA / name).open() as handle:
        header = next(csv.reader(handle))
    known = {m.column for m in CSV_METRICS} | {"Concurrency"}
    assert set(header) <= known, set(header) - known


def test_argv_renders_count_windows_and_shapes_when_built() -> None:
    args = PerfAnalyzerArgs(
        model="m_fp16_onnx",
        csv_path=Path("o.csv"),
        url="h:1",
        batch_size=4,
        concurrency=(1, 2),
        input_data=Path("in.json"),
        shapes={"input_ids": (128,)},
        measurement_request_count=30,
    )
    argv = args.argv("pa")
    assert argv[:9] == ["pa", "-m", "m_fp16_onnx", "-i", "grpc", "-u", "h:1", "-b", "4"]
    joined = " ".join(argv)
    assert "--concurrency-range 1:2" in joined and "--shape input_ids:128" in joined
    assert "--measurement-mode count_windows --measurement-request-count 30" in joined
    assert "--collect-metrics" not in joined and argv[-2:] == ["-f", "o.csv"]


def test_argv_uses_interval_when_time_windows() -> None:
    args = PerfAnalyzerArgs(
        model="m", csv_path=Path("o.csv"), measurement_mode="time_windows", measurement_interval_ms=1500, collect_metrics=True
    )
    joined = " ".join(args.argv())
    assert "--measurement-interval 1500" in joined and "--collect-metrics" in joined


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"concurrency": (2, 1)}, {"measurement_mode": "windows"}])
def test_args_raise_bad_input_when_settings_break_rules(bad: dict[str, object]) -> None:
    with pytest.raises(BadInputError):
        PerfAnalyzerArgs(model="m", csv_path=Path("o.csv"), **bad)  # type: ignore[arg-type]


def test_analyzer_env_adds_cuda_runtime_when_wheel_installed() -> None:
    assert find_perf_analyzer().is_file()
    assert "cuda_runtime" in analyzer_env({}).get("LD_LIBRARY_PATH", "")
