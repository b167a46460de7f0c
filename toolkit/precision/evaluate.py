"""Judging a candidate graph against FP32 on a data set and a bar: the one measurement the search, the
baseline and the result table share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from toolkit.measurement.compare import OutputMetrics, compare_outputs, mismatches
from toolkit.precision.data import DataSet
from toolkit.precision.emulate import fp16_emulation
from toolkit.precision.policy_file import PolicyBar
from toolkit.precision.probe import run_session, session_of

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class Measurement:
    """A candidate's outputs against FP32 over a data set, and whether they meet the bar."""

    met: bool
    worst_cosine: float | None
    nonfinite: int
    min_top1: float | None
    failures: tuple[str, ...]

    def summary(self) -> str:
        cosine = "nan" if self.worst_cosine is None else f"{self.worst_cosine:.7f}"
        top1 = "" if self.min_top1 is None else f", top-1 {self.min_top1:.4f}"
        verdict = "meets the bar" if self.met else f"fails: {'; '.join(self.failures[:3])}"
        return f"worst cosine {cosine}, NaN/Inf {self.nonfinite}{top1}: {verdict}"


class Judge:
    """FP32 outputs of ``fp32`` on ``data`` computed once; :meth:`measure` judges any graph with the same outputs.

    ``emulate`` (default) judges candidates as a GPU stores FP16; False judges them as ONNX Runtime's CPU
    provider runs them (for CPU deployments), which keeps some FP16 values in FP32."""

    def __init__(self, fp32: onnx.ModelProto, data: DataSet, bar: PolicyBar, emulate: bool = True, threads: int = 0) -> None:
        self.data, self.bar, self.emulate, self.threads = data, bar, emulate, threads
        session = session_of(fp32, threads)
        self.outputs = [item.name for item in session.get_outputs()]
        self.top1 = bar.top1_of(self.outputs)
        self.references = [run_session(session, batch) for batch in data.batches]

    def measure(self, graph: onnx.ModelProto) -> Measurement:
        """Run ``graph`` on every batch (emulating the GPU's FP16 storage unless told otherwise, see
        :mod:`toolkit.precision.emulate`) and judge its outputs with the comparator and the bar."""
        session = session_of(fp16_emulation(graph) if self.emulate else graph, self.threads)
        metrics: list[dict[str, OutputMetrics]] = []
        failures = []
        for index, (batch, reference) in enumerate(zip(self.data.batches, self.references, strict=True)):
            got = run_session(session, batch, self.outputs)
            compared = compare_outputs(reference, got, mask=batch.get("attention_mask"), top1_outputs=self.top1)
            metrics.append(compared)
            failures += [str(item) for item in mismatches(f"{self.data.kind} batch {index}", compared, self.bar.bar())]
        return _measurement(metrics, failures)


def _measurement(metrics: list[dict[str, OutputMetrics]], failures: list[str]) -> Measurement:
    flat = [m for batch in metrics for m in batch.values()]
    cosines = [m.cosine_min for m in flat]
    worst = None if any(math.isnan(c) for c in cosines) or not cosines else float(min(cosines))
    nonfinite = sum(round((m.nan_rate + m.inf_rate) * m.elements) for m in flat)
    top1 = [m.top1_agreement for m in flat if m.top1_agreement is not None]
    return Measurement(not failures, worst, nonfinite, float(np.min(top1)) if top1 else None, tuple(failures))
