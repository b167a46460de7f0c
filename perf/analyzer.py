"""perf_analyzer: find the real binary, render its arguments, run it, and parse its CSV report.

The CSV written by ``-f`` is the only source of numbers (never stdout). ``CSV_METRICS`` maps each
CSV column to a metric name and the divisor that converts its unit, in the style of Triton Model
Analyzer's perf_analyzer record table.
"""

from __future__ import annotations

import csv
import ctypes.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from toolkit.errors import BadInputError, DependencyMissingError, ToolkitError

MeasurementMode = Literal["time_windows", "count_windows"]


class PerfAnalyzerError(ToolkitError):
    """perf_analyzer exited with an error (its last output lines are in the message)."""


@dataclass(frozen=True)
class CsvMetric:
    """One perf_analyzer CSV column: the metric it feeds, the divisor to its unit, and that unit."""

    column: str
    metric: str
    divisor: float
    unit: str


CSV_METRICS: tuple[CsvMetric, ...] = (
    CsvMetric("Inferences/Second", "throughput", 1.0, "infer/s"),
    CsvMetric("p50 latency", "latency_p50", 1000.0, "ms"),
    CsvMetric("p90 latency", "latency_p90", 1000.0, "ms"),
    CsvMetric("p95 latency", "latency_p95", 1000.0, "ms"),
    CsvMetric("p99 latency", "latency_p99", 1000.0, "ms"),
    CsvMetric("Avg latency", "latency_avg", 1000.0, "ms"),
    CsvMetric("Client Send", "client_send", 1000.0, "ms"),
    CsvMetric("Client Recv", "client_recv", 1000.0, "ms"),
    CsvMetric("Network+Server Send/Recv", "network_server_send_recv", 1000.0, "ms"),
    CsvMetric("Server Queue", "server_queue", 1000.0, "ms"),
    CsvMetric("Server Compute Input", "server_compute_input", 1000.0, "ms"),
    CsvMetric("Server Compute Infer", "server_compute_infer", 1000.0, "ms"),
    CsvMetric("Server Compute Output", "server_compute_output", 1000.0, "ms"),
    CsvMetric("Avg GPU Utilization", "gpu_utilization", 0.01, "%"),
    CsvMetric("Avg GPU Power Usage", "gpu_power_usage", 1.0, "W"),
    CsvMetric("Max GPU Memory Usage", "gpu_memory_used", 1024.0 * 1024.0, "MiB"),
    CsvMetric("Total GPU Memory", "gpu_memory_total", 1024.0 * 1024.0, "MiB"),
)
UNITS: dict[str, str] = {m.metric: m.unit for m in CSV_METRICS}


def find_perf_analyzer() -> Path:
    """The ``perf_analyzer`` that tritonclient's wheel puts beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.is_file():
        return beside
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    raise DependencyMissingError(
        "perf_analyzer not found beside the running Python or on PATH; install it with `pip install 'tritonclient[grpc,http]==2.51.0'`"
    )


def cuda_runtime_lib_dir() -> Path | None:
    """The ``lib`` folder of PyPI's nvidia-cuda-runtime-cu12 (holds libcudart.so.12), if installed."""
    try:
        import nvidia.cuda_runtime
    except ImportError:
        return None
    for root in getattr(nvidia.cuda_runtime, "__path__", []):
        lib = Path(root) / "lib"
        if (lib / "libcudart.so.12").exists():
            return lib
    return None


def check_libb64() -> None:
    """Fail with the install hint when Debian's libb64 (perf_analyzer needs libb64.so.0d) is absent."""
    # LD_LIBRARY_PATH counts too: a machine without apt can carry the .deb unpacked (scripts/gpu_pipeline.sh).
    folders = ["/usr/lib/x86_64-linux-gnu", "/usr/lib", "/lib/x86_64-linux-gnu", *os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)]
    if ctypes.util.find_library("b64") or any(folder and Path(folder, "libb64.so.0d").exists() for folder in folders):
        return
    raise DependencyMissingError("perf_analyzer needs libb64.so.0d, which is not installed; run `apt-get install -y libb64-0d`")


def analyzer_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for perf_analyzer: ``LD_LIBRARY_PATH`` gains the CUDA runtime wheel's lib folder."""
    env = dict(os.environ if base is None else base)
    lib = cuda_runtime_lib_dir()
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


@dataclass(frozen=True)
class PerfAnalyzerArgs:
    """One perf_analyzer invocation; ``argv()`` renders it. Bad settings fail at construction."""

    model: str
    csv_path: Path
    url: str = "localhost:8001"
    protocol: Literal["grpc", "http"] = "grpc"
    batch_size: int = 1
    concurrency: tuple[int, int] = (1, 1)
    input_data: Path | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    measurement_mode: MeasurementMode = "count_windows"
    measurement_interval_ms: int = 2000
    measurement_request_count: int = 50
    stability_percentage: float = 25.0
    max_trials: int = 10
    collect_metrics: bool = False
    metrics_url: str | None = None
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise BadInputError(f"batch size {self.batch_size} is below 1; pass --batch-sizes 1 or more")
        low, high = self.concurrency
        if not 1 <= low <= high:
            raise BadInputError(f"concurrency range {low}:{high} must satisfy 1 <= start <= end; fix --concurrency")
        if self.measurement_mode not in ("time_windows", "count_windows"):
            raise BadInputError(f"measurement mode {self.measurement_mode!r} is not time_windows or count_windows")
        if self.stability_percentage <= 0 or self.max_trials < 1:
            raise BadInputError("stability percentage must be > 0 and max trials >= 1")

    def argv(self, binary: Path | str = "perf_analyzer") -> list[str]:
        """The full command line, binary first."""
        args = [str(binary), "-m", self.model, "-i", self.protocol, "-u", self.url, "-b", str(self.batch_size)]
        args += ["--concurrency-range", f"{self.concurrency[0]}:{self.concurrency[1]}"]
        if self.input_data is not None:
            args += ["--input-data", str(self.input_data)]
        for name, shape in self.shapes.items():
            args += ["--shape", f"{name}:{','.join(str(d) for d in shape)}"]
        args += ["--measurement-mode", self.measurement_mode]
        if self.measurement_mode == "count_windows":
            args += ["--measurement-request-count", str(self.measurement_request_count)]
        else:
            args += ["--measurement-interval", str(self.measurement_interval_ms)]
        args += ["--stability-percentage", f"{self.stability_percentage:g}", "--max-trials", str(self.max_trials)]
        if self.collect_metrics:
            args.append("--collect-metrics")
            if self.metrics_url:
                args += ["--metrics-url", self.metrics_url]
        args += ["-f", str(self.csv_path), *self.extra]
        return args


def run_perf_analyzer(args: PerfAnalyzerArgs, timeout_s: float = 600.0) -> list[dict[str, float]]:
    """Run perf_analyzer, then parse and return its CSV rows (one per concurrency level).

    Raises ``PerfAnalyzerError`` with the tail of its output when it fails or writes no CSV.
    """
    check_libb64()
    binary = find_perf_analyzer()
    args.csv_path.parent.mkdir(parents=True, exist_ok=True)
    args.csv_path.unlink(missing_ok=True)
    try:
        done = subprocess.run(args.argv(binary), env=analyzer_env(), capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise PerfAnalyzerError(f"perf_analyzer on {args.model} ran past {timeout_s:.0f} s") from error
    if done.returncode != 0 or not args.csv_path.is_file():
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise PerfAnalyzerError(f"perf_analyzer on {args.model} exited {done.returncode}: " + " | ".join(lines[-4:])[-1500:])
    return parse_csv(args.csv_path)


def parse_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a perf_analyzer ``-f`` CSV as ``{metric: value}`` in the units of ``CSV_METRICS``.

    ``concurrency`` (or ``request_rate``) comes from the first column; unknown columns are ignored.
    """
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise PerfAnalyzerError(f"perf_analyzer CSV {path} has no rows")
    parsed = []
    for row in rows:
        record: dict[str, float] = {}
        if "Concurrency" in row:
            record["concurrency"] = float(row["Concurrency"])
        elif "Request Rate" in row:
            record["request_rate"] = float(row["Request Rate"])
        for metric in CSV_METRICS:
            value = row.get(metric.column)
            if value not in (None, ""):
                record[metric.metric] = float(value) / metric.divisor
        parsed.append(record)
    return parsed


def perf_analyzer_version() -> str | None:
    """``perf_analyzer --version`` output, or None when it cannot run."""
    try:
        done = subprocess.run(
            [str(find_perf_analyzer()), "--version"], env=analyzer_env(), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, ToolkitError, subprocess.TimeoutExpired):
        return None
    return (done.stdout + done.stderr).strip() or None
