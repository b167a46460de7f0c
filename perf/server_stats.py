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
