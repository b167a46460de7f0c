"""The one comparator: how a candidate output differs from its reference, Polygraphy-comparator style.

Per output: cosine similarity over last-axis vectors (mean, min), absolute and relative error (max, mean,
median) over elements finite in both, NaN and Inf rates of the candidate, and top-1 agreement for logits.
Export checks, served fidelity, the engine grid and the precision tools all measure with it, and judge
with :func:`mismatches`, which collects every metric outside its limit instead of stopping at the first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import BadInputError

REL_EPS = 1e-6


@dataclass(frozen=True)
class OutputMetrics:
    """How one candidate output differs from its reference (NaN where nothing finite was left)."""

    elements: int
    cosine_mean: float
    cosine_min: float
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    nan_rate: float
    inf_rate: float
    top1_agreement: float | None = None


def token_rows(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``array`` as float64 ``[rows, features]``: token rows selected by ``mask`` ([batch, seq]) if it applies."""
    values = np.asarray(array, dtype=np.float64)
    if mask is not None and values.ndim >= 3 and values.shape[:2] == mask.shape:
        values = values[mask.astype(bool)]
    if values.ndim == 0:
        return values.reshape(1, 1)
    if values.ndim == 1:
        return values.reshape(1, -1)
    return values.reshape(-1, values.shape[-1])


def cosine_rows(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair of last-axis vectors, in float64: 1 when both are zero, 0 when only one
    is, NaN when either holds a non-finite value."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1, np.shape(reference)[-1])
    cand = np.asarray(candidate, dtype=np.float64).reshape(-1, np.shape(candidate)[-1])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        dot = np.sum(ref * cand, axis=-1)
        norm_r2 = np.sum(ref * ref, axis=-1)
        norm_c2 = np.sum(cand * cand, axis=-1)
        cosine = dot / np.sqrt(norm_r2 * norm_c2)  # one square root: parallel vectors give exactly 1
    zero_r, zero_c = norm_r2 == 0, norm_c2 == 0
    cosine = np.where(zero_r & zero_c, 1.0, np.where(zero_r | zero_c, 0.0, cosine))
    cosine = np.where(np.isfinite(cand).all(axis=-1) & np.isfinite(ref).all(axis=-1), cosine, np.nan)
    result: np.ndarray = np.clip(cosine, -1.0, 1.0)
    return result


def _stat(values: np.ndarray, reduce: Any) -> float:
    return float(reduce(values)) if values.size else math.nan


def compare_arrays(
    reference: np.ndarray,
    candidate: np.ndarray,
    mask: np.ndarray | None = None,
    top1: bool = False,
    rel_eps: float = REL_EPS,
) -> OutputMetrics:
    """Metrics of ``candidate`` against ``reference`` (same shape).

    ``mask`` ([batch, seq]) keeps only attended token rows of per-token outputs. Cosine is taken over
    last-axis vectors; errors over elements finite in both; relative error is ``|c - r| / (|r| + rel_eps)``.
    ``top1`` adds the fraction of rows whose argmax agrees.
    """
    if np.shape(reference) != np.shape(candidate):
        raise BadInputError(f"shapes differ: reference {np.shape(reference)}, candidate {np.shape(candidate)}")
    ref, cand = token_rows(reference, mask), token_rows(candidate, mask)
    elements = cand.size
    nan_rate = float(np.isnan(cand).sum() / elements) if elements else 0.0
    inf_rate = float(np.isinf(cand).sum() / elements) if elements else 0.0
    cosine = cosine_rows(ref, cand) if ref.shape[0] else np.zeros(0)
    finite_cosine = cosine[np.isfinite(cosine)]
    both = np.isfinite(ref) & np.isfinite(cand)
    abs_err = np.abs(cand[both] - ref[both])
    rel_err = abs_err / (np.abs(ref[both]) + rel_eps)
    agreement = None
    if top1 and ref.shape[0]:
        agreement = float(np.mean(np.argmax(ref, axis=-1) == np.argmax(cand, axis=-1)))
    return OutputMetrics(
        elements=int(elements),
        cosine_mean=_stat(finite_cosine, np.mean),
        cosine_min=_stat(finite_cosine, np.min),
        max_abs=_stat(abs_err, np.max),
        mean_abs=_stat(abs_err, np.mean),
        median_abs=_stat(abs_err, np.median),
        max_rel=_stat(rel_err, np.max),
        mean_rel=_stat(rel_err, np.mean),
        median_rel=_stat(rel_err, np.median),
        nan_rate=nan_rate,
        inf_rate=inf_rate,
        top1_agreement=agreement,
    )


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    mask: np.ndarray | None = None,
    top1_outputs: frozenset[str] = frozenset(),
) -> dict[str, OutputMetrics]:
    """:func:`compare_arrays` for every floating-point output the two share, in the reference's order."""
    return {
        name: compare_arrays(value, candidate[name], mask, top1=name in top1_outputs)
        for name, value in reference.items()
        if name in candidate and np.issubdtype(np.asarray(value).dtype, np.floating)
    }


@dataclass(frozen=True)
class Bar:
    """Limits an output must meet; None leaves a metric unjudged."""

    min_cosine: float | None = None
    max_nan_rate: float = 0.0
    max_inf_rate: float = 0.0
    min_top1: float | None = None
    max_abs: float | None = None


@dataclass(frozen=True)
class Mismatch:
    """One metric of one output of one case outside its limit."""

    case: str
    output: str
    metric: str
    value: float | None
    limit: float

    def __str__(self) -> str:
        shown = "nan" if self.value is None or math.isnan(self.value) else f"{self.value:.6g}"
        return f"{self.case} {self.output}: {self.metric}={shown} (limit {self.limit:g})"


def _below(value: float | None, limit: float) -> bool:
    return value is None or math.isnan(value) or value < limit


def _above(value: float | None, limit: float) -> bool:
    return value is None or math.isnan(value) or value > limit


def mismatches(case: str, outputs: Mapping[str, OutputMetrics], bar: Bar) -> list[Mismatch]:
    """Every metric of every output in ``outputs`` that breaks ``bar``; a NaN metric breaks any limit on it."""
    found: list[Mismatch] = []
    for name, m in outputs.items():
        checks: list[tuple[str, float | None, float, bool]] = [
            ("nan_rate", m.nan_rate, bar.max_nan_rate, m.nan_rate > bar.max_nan_rate),
            ("inf_rate", m.inf_rate, bar.max_inf_rate, m.inf_rate > bar.max_inf_rate),
        ]
        if bar.min_cosine is not None:
            checks.append(("cosine_min", m.cosine_min, bar.min_cosine, _below(m.cosine_min, bar.min_cosine)))
        if bar.max_abs is not None:
            checks.append(("max_abs", m.max_abs, bar.max_abs, _above(m.max_abs, bar.max_abs)))
        if bar.min_top1 is not None and m.top1_agreement is not None:
            checks.append(("top1_agreement", m.top1_agreement, bar.min_top1, _below(m.top1_agreement, bar.min_top1)))
        found += [Mismatch(case, name, metric, value, limit) for metric, value, limit, bad in checks if bad]
    return found
