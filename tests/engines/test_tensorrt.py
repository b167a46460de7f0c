"""TensorRT plans: a clear refusal without TensorRT, a real strongly typed build where it is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import BadInputError, DependencyMissingError
from toolkit.models.export import onnx_from_hf
from toolkit.models.loading import LoadedModel
from toolkit.names import Precision
from toolkit.precision import save_onnx, variant_from_fp32
from toolkit.runtimes.base import ShapeProfile
from toolkit.runtimes.tensorrt import is_tensorrt_available, plan_from_onnx

needs_tensorrt = pytest.mark.skipif(
    not is_tensorrt_available(), reason="TensorRT is not installed (it cannot be on this project's CPU machines)"
)


@pytest.mark.skipif(is_tensorrt_available(), reason="TensorRT is installed here")
def test_plan_from_onnx_refuses_by_name_when_tensorrt_is_absent(tmp_path: Path) -> None:
    with pytest.raises(DependencyMissingError, match="TensorRT is not installed"):
        plan_from_onnx(tmp_path / "m.onnx", tmp_path / "m.plan", ShapeProfile(), tmp_path / "cache")
    assert not (tmp_path / "m.plan").exists(), "no fake plan may be written"


def test_shape_profile_rejects_impossible_shapes() -> None:
    with pytest.raises(BadInputError, match="min <= opt <= max"):
        ShapeProfile(min_seq=64, opt_seq=32)
    with pytest.raises(BadInputError, match="batch size must be >= 1"):
        ShapeProfile(min_batch=0)


@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize("precision", list(Precision))
def test_plan_builds_and_deserializes_for_each_precision(precision: Precision, tiny_bert: LoadedModel, tmp_path: Path) -> None:
    import onnx
    import tensorrt as trt

    exported = onnx.load(str(onnx_from_hf(tiny_bert, tmp_path / "fp32.onnx")))
    graph = save_onnx(variant_from_fp32(exported, precision), tmp_path / f"{precision.value}.onnx")
    plan = plan_from_onnx(
        graph, tmp_path / f"{precision.value}.plan", ShapeProfile(max_batch=4, min_seq=8, opt_seq=32, max_seq=64), tmp_path / "cache"
    )
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    assert engine is not None and engine.num_io_tensors >= 4
