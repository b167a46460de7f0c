"""Fidelity metrics on hand-made arrays: exact cosines, counted NaN/Inf, collected mismatches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from client.fidelity import (
    FidelityError,
    FidelityRecord,
    Tolerances,
    check_records,
    format_table,
    raise_on_mismatch,
    random_vs_text,
    results_dir,
    write_results,
)
from toolkit.environment import device_folder
from toolkit.errors import BadInputError, ToolkitError
from toolkit.measurement.compare import OutputMetrics, compare_arrays, cosine_rows


def _metrics(**overrides: float | None) -> OutputMetrics:
    values: dict[str, float | None] = {
        "elements": 4, "cosine_mean": 1.0, "cosine_min": 1.0, "max_abs": 0.0, "mean_abs": 0.0, "median_abs": 0.0,
        "max_rel": 0.0, "mean_rel": 0.0, "median_rel": 0.0, "nan_rate": 0.0, "inf_rate": 0.0, "top1_agreement": None,
    }  # fmt: skip
    values.update(overrides)
    return OutputMetrics(**values)  # type: ignore[arg-type]


def _record(precision: str = "hybrid", inputs: str = "text", **metrics: float | None) -> FidelityRecord:
    return FidelityRecord("m", precision, "onnxruntime", 1, 8, inputs, "shipped", 1, {"out": _metrics(**metrics)})


def test_cosine_rows_exact_when_vectors_known() -> None:
    reference = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    candidate = np.array([[0.0, 1.0], [2.0, 2.0], [-3.0, -4.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(cosine_rows(reference, candidate), [0.0, 1.0, -1.0, 1.0, 0.0])


def test_compare_arrays_counts_nan_and_inf_when_candidate_has_them() -> None:
    reference = np.ones((2, 4), dtype=np.float32)
    candidate = np.array([[1, 1, np.nan, 1], [np.inf, -np.inf, 1, 1]], dtype=np.float32)
    m = compare_arrays(reference, candidate)
    assert m.elements == 8
    assert m.nan_rate == pytest.approx(1 / 8)
    assert m.inf_rate == pytest.approx(2 / 8)
    assert math.isnan(m.cosine_mean) and math.isnan(m.cosine_min)  # no row is all finite
    assert m.max_abs == 0.0  # errors only over elements finite in both


def test_compare_arrays_reports_errors_and_cosine_when_values_differ() -> None:
    reference = np.array([[1.0, 2.0], [4.0, -2.0]])
    candidate = np.array([[1.0, 2.5], [4.0, -2.0]])
    m = compare_arrays(reference, candidate, rel_eps=0.0)
    assert m.max_abs == pytest.approx(0.5)
    assert m.mean_abs == pytest.approx(0.125)
    assert m.max_rel == pytest.approx(0.25)
    assert m.cosine_min == pytest.approx((1 + 5) / (math.sqrt(5) * math.sqrt(7.25)))
    assert m.cosine_mean == pytest.approx((1.0 + m.cosine_min) / 2)
    assert m.nan_rate == 0.0 and m.inf_rate == 0.0 and m.top1_agreement is None


def test_compare_arrays_ignores_padded_tokens_when_mask_given() -> None:
    reference = np.zeros((1, 3, 2))
    reference[0, :, 0] = 1.0
    candidate = reference.copy()
    candidate[0, 2] = [np.nan, 5.0]  # a padded position: must not count
    m = compare_arrays(reference, candidate, mask=np.array([[1, 1, 0]]))
    assert m.elements == 4 and m.nan_rate == 0.0 and m.cosine_min == 1.0


def test_compare_arrays_top1_agreement_when_requested() -> None:
    reference = np.array([[[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]])
    candidate = np.array([[[0.2, 0.7, 0.1], [0.1, 0.8, 0.1]]])
    assert compare_arrays(reference, candidate, top1=True).top1_agreement == pytest.approx(0.5)


def test_compare_arrays_raises_when_shapes_differ() -> None:
    with pytest.raises(BadInputError, match="shapes differ"):
        compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)))


def test_check_records_collects_every_mismatch_when_several_fail() -> None:
    records = [
        _record(cosine_min=0.99, nan_rate=0.5),
        _record(precision="fp32", cosine_min=0.9999),
        _record(inputs="random", cosine_min=0.1, inf_rate=0.25),
        _record(cosine_min=float("nan")),
    ]
    found = check_records(records, Tolerances())
    assert [(m.metric, m.limit) for m in found] == [
        ("nan_rate", 0.0), ("cosine_min", 0.9998), ("cosine_min", 0.99999), ("inf_rate", 0.0), ("cosine_min", 0.9998),
    ]  # fmt: skip
    with pytest.raises(FidelityError, match="5 fidelity mismatch") as caught:
        raise_on_mismatch(records)
    assert isinstance(caught.value, ToolkitError) and len(caught.value.mismatches) == 5
    assert "\n" not in str(caught.value)


def test_check_records_passes_when_within_tolerance() -> None:
    raise_on_mismatch([_record(cosine_min=0.99995), _record(inputs="random", cosine_min=0.2)])


def test_check_records_applies_top1_floor_when_set() -> None:
    records = [_record(top1_agreement=0.9)]
    assert not check_records(records)
    assert [m.metric for m in check_records(records, Tolerances(min_top1=0.95))] == ["top1_agreement"]


def test_random_vs_text_says_underestimates_when_random_has_fewer_nans() -> None:
    rows = random_vs_text([_record(inputs="random", nan_rate=0.0), _record(inputs="text", nan_rate=0.1)])
    assert len(rows) == 1
    assert rows[0]["nan_rate_verdict"] == "underestimates" and rows[0]["inf_rate_verdict"] == "agrees"


def test_write_results_writes_json_with_nan_as_null_when_metrics_are_nan(tmp_path) -> None:
    import json

    env = {"host": "Box_1", "gpus": []}
    path = write_results([_record(cosine_min=float("nan"))], results_dir(tmp_path, env) / "fidelity.json", env)
    assert path == tmp_path / device_folder(None) / "fidelity.json"  # the CPU's folder, as perf's records
    payload = json.loads(path.read_text())
    assert payload["environment"] == env
    assert payload["records"][0]["outputs"]["out"]["cosine_min"] is None
    assert payload["records"][0]["precision"] == "hybrid"


@pytest.mark.parametrize(
    ("gpu", "folder"),
    [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"), ("Tesla T4", "t4"), ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090")],
)
def test_results_dir_uses_gpu_model_number_when_gpu_present(tmp_path, gpu: str, folder: str) -> None:
    env = {"host": "h", "gpus": [{"name": gpu, "driver": "580"}]}
    assert results_dir(tmp_path, env) == tmp_path / folder


def test_format_table_has_one_line_per_output_when_records_given() -> None:
    lines = format_table([_record(), _record(precision="fp16", cosine_mean=float("nan"))]).splitlines()
    assert len(lines) == 3 and lines[0].startswith("case") and " - " in lines[2]
