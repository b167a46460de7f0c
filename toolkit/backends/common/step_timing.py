"""Where a Python step's ``execute`` time goes: its phases, timed in the stub and published as Triton metrics.

Copied beside the text and engine backends' ``model.py`` (imported by this module name); needs only the standard
library: ``triton_sink`` takes ``triton_python_backend_utils`` as an argument.

A ``StepClock`` times the phases of one ``execute`` (``start``, ``mark(phase)`` after each, ``done(rows)``) and sums
them in the stub. At most every ``flush_s`` seconds it pushes the sums to its sink: each push is a message from the
stub to the server, so pushing per ``execute`` would cost more than the shortest phases. The Triton sink keeps three
counters on the server's metrics endpoint, labelled ``model`` and ``instance``:

- ``toolkit_step_seconds_total{phase=...}``: wall seconds per phase, and ``phase="execute"``, the whole ``execute``
  (Triton's compute time for the step minus this is the stub's round trip);
- ``toolkit_step_rows_total``: rows (texts, or engine batch rows) the executes carried;
- ``toolkit_step_executions_total``.

``perf.server_stats.StepMetricsReader`` reads them around a load level: microseconds per row in each phase.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

EXECUTE = "execute"
SECONDS, ROWS, EXECUTIONS = "toolkit_step_seconds_total", "toolkit_step_rows_total", "toolkit_step_executions_total"
Sink = Callable[[dict[str, float], int, int], None]  # (seconds per phase, rows, executions) since the last push


class StepClock:
    """Phase times of a step's executes, summed and pushed to ``sink`` at most every ``flush_s`` seconds."""

    def __init__(self, sink: Sink | None, flush_s: float = 0.5) -> None:
        self.sink, self.flush_s = sink, flush_s
        self.seconds: dict[str, float] = {}
        self.rows = self.executions = 0
        self.began = self.last = self.flushed = time.perf_counter()

    def start(self) -> None:
        self.began = self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """The time since the previous mark (or ``start``) goes to ``phase``."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now

    def done(self, rows: int) -> None:
        """One execute of ``rows`` rows ended; push the sums when ``flush_s`` has passed since the last push."""
        now = time.perf_counter()
        self.seconds[EXECUTE] = self.seconds.get(EXECUTE, 0.0) + now - self.began
        self.rows += rows
        self.executions += 1
        if now - self.flushed >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        if self.sink is not None and self.executions:
            self.sink(self.seconds, self.rows, self.executions)
        self.seconds, self.rows, self.executions = {}, 0, 0
        self.flushed = time.perf_counter()


def triton_sink(pb_utils: Any, model: str, instance: str) -> Sink | None:
    """A sink onto the server's metrics endpoint (the three counters above); None, with the reason logged, when
    this server makes no custom metrics (metrics off)."""
    try:
        kind = pb_utils.MetricFamily.COUNTER
        families = {
            name: pb_utils.MetricFamily(name=name, description=text, kind=kind)
            for name, text in (
                (SECONDS, "Wall seconds a toolkit Python step spent per phase of its executes (phase execute: all of it)"),
                (ROWS, "Rows the executes of a toolkit Python step carried"),
                (EXECUTIONS, "Executes of a toolkit Python step"),
            )
        }
        labels = {"model": model, "instance": instance}
        rows, executions = families[ROWS].Metric(labels=labels), families[EXECUTIONS].Metric(labels=labels)
    except Exception as error:  # the step serves without its timing
        pb_utils.Logger.log_warn(f"{model}: no step timing metrics ({type(error).__name__}: {error})")
        return None
    phases: dict[str, Any] = {}

    def push(seconds: dict[str, float], row_count: int, execute_count: int) -> None:
        for phase, value in seconds.items():
            if phase not in phases:
                phases[phase] = families[SECONDS].Metric(labels={**labels, "phase": phase})
            phases[phase].increment(value)
        rows.increment(row_count)
        executions.increment(execute_count)

    push.families = families  # type: ignore[attr-defined]  # kept alive as long as their metrics
    return push
