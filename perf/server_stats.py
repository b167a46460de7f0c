"""Where a request's server time goes, model by model, from Triton's statistics API.

perf_analyzer's CSV gives an ensemble's time only as a sum over its steps. Triton counts each model's
requests and the nanoseconds they spent queued and in compute (input, infer, output); the difference
of two snapshots taken around one perf_analyzer run, divided by the requests in between, is each
step's time per request: the tokenizer's, the engine's, and the ensemble's as a whole. The snapshot
covers the whole perf_analyzer run (every trial, not only the stable windows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

# Triton's per-model duration statistics, in the order a request meets them.
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")

Snapshot = dict[str, dict[str, int]]  # model -> {"requests", "executions", "<phase>_ns", "request_ns"}
Result = TypeVar("Result")


def snapshot_from_json(statistics: dict[str, Any]) -> Snapshot:
    """Totals per model from ``get_inference_statistics(as_json=True)`` (versions of one model summed)."""
    totals: Snapshot = {}
    for model in statistics.get("model_stats", []):
        stats = model.get("inference_stats", {})
        entry = totals.setdefault(
            model["name"], {"requests": 0, "failures": 0, "executions": 0, "request_ns": 0, **{f"{p}_ns": 0 for p in PHASES}}
        )
        entry["requests"] += int(stats.get("success", {}).get("count", 0))
        entry["failures"] += int(stats.get("fail", {}).get("count", 0))
        entry["request_ns"] += int(stats.get("success", {}).get("ns", 0))
        entry["executions"] += int(model.get("execution_count", 0))
        for phase in PHASES:
            entry[f"{phase}_ns"] += int(stats.get(phase, {}).get("ns", 0))
    return totals


def hop_times(before: Snapshot, after: Snapshot) -> dict[str, dict[str, float]]:
    """Per model that served requests between the snapshots: requests, executions, and microseconds per
    request in each phase and in all (``request_us``, Triton's end-to-end time for that model)."""
    hops: dict[str, dict[str, float]] = {}
    for name, now in sorted(after.items()):
        then = before.get(name, {})
        requests = now["requests"] - then.get("requests", 0)
        if requests <= 0:
            continue
        hop: dict[str, float] = {"requests": requests, "executions": now["executions"] - then.get("executions", 0)}
        failures = now.get("failures", 0) - then.get("failures", 0)
        if failures:
            hop["failures"] = failures
        for field in ("request", *PHASES):
            hop[f"{field}_us"] = round((now[f"{field}_ns"] - then.get(f"{field}_ns", 0)) / requests / 1000.0, 1)
        hops[name] = hop
    return hops


class StatisticsReader:
    """Snapshots of one server's statistics over gRPC; None (and one warning) when the server gives none."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Any = None
        self.failed = False

    def snapshot(self) -> Snapshot | None:
        if self.failed:
            return None
        try:
            if self.client is None:
                import tritonclient.grpc as grpcclient

                self.client = grpcclient.InferenceServerClient(self.url)
            return snapshot_from_json(self.client.get_inference_statistics(as_json=True))
        except Exception as error:  # statistics are extra: the latency numbers stand without them
            log.warning("no per-model statistics from %s (%s: %s); records go without hops", self.url, type(error).__name__, error)
            self.failed = True
            return None

    def around(self, run: Callable[[], Result]) -> tuple[Result, dict[str, dict[str, float]] | None]:
        """``run()``'s result and each model's server time per request while it ran (``hop_times``); None
        for the latter when the server gave no statistics before or after."""
        before = self.snapshot()
        result = run()
        after = self.snapshot()
        return result, (hop_times(before, after) if before is not None and after is not None else None)


STEP_PREFIX = "toolkit_step_"
StepTotals = dict[str, dict[str, float]]  # model -> {"rows", "executions", "<phase>_s"}


def steps_from_metrics(text: str) -> StepTotals:
    """The toolkit's step counters (``toolkit/backends/common/step_timing.py``) in a Prometheus text exposition,
    summed over each model's instances: rows, executions and wall seconds per phase."""
    totals: StepTotals = {}
    for line in text.splitlines():
        if not line.startswith(STEP_PREFIX):
            continue
        name, _, rest = line.partition("{")
        labels_text, _, value = rest.rpartition("}")
        labels = dict(part.split("=", 1) for part in labels_text.split(",") if "=" in part)
        labels = {key.strip(): raw.strip().strip('"') for key, raw in labels.items()}
        entry = totals.setdefault(labels.get("model", "?"), {})
        field = {"toolkit_step_rows_total": "rows", "toolkit_step_executions_total": "executions"}.get(name)
        field = field or f"{labels.get('phase', '?')}_s"
        entry[field] = entry.get(field, 0.0) + float(value)
    return totals


def step_times(before: StepTotals, after: StepTotals) -> dict[str, dict[str, float]]:
    """Per model whose steps ran between the snapshots: rows, executions, and microseconds per execute in each phase
    (``<phase>_us``; ``execute_us`` is the whole execute as the stub saw it)."""
    steps: dict[str, dict[str, float]] = {}
    for model, now in sorted(after.items()):
        then = before.get(model, {})
        executions = now.get("executions", 0.0) - then.get("executions", 0.0)
        if executions <= 0:
            continue
        step = {"rows": now.get("rows", 0.0) - then.get("rows", 0.0), "executions": executions}
        for field in sorted(f for f in now if f.endswith("_s")):
            step[f"{field[:-2]}_us"] = round((now[field] - then.get(field, 0.0)) / executions * 1e6, 1)
        steps[model] = step
    return steps


class StepMetricsReader:
    """The toolkit's step timing from a server's metrics endpoint (``http://host:port/metrics``) around a call.

    The stubs push their sums at most every half second while they execute, so a level's figures may include the
    last half second of the level before; rows and seconds are pushed together, so per-row times stay whole."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.failed = url is None

    def snapshot(self) -> StepTotals | None:
        if self.failed or self.url is None:
            return None
        try:
            from urllib.request import urlopen

            with urlopen(self.url, timeout=10) as response:
                return steps_from_metrics(response.read().decode())
        except OSError as error:  # step timing is extra: the latency numbers stand without it
            log.warning("no step timing from %s (%s: %s); records go without steps", self.url, type(error).__name__, error)
            self.failed = True
            return None

    def around(self, run: Callable[[], Result]) -> tuple[Result, dict[str, dict[str, float]] | None]:
        before = self.snapshot()
        result = run()
        after = self.snapshot()
        return result, (step_times(before, after) if before is not None and after is not None else None)
