"""Precision variants: per-node precisions, fidelity of hybrid, and the FP16 overflow that hybrid avoids."""

from __future__ import annotations

from pathlib import Path

import fidelity_floors as floors
import numpy as np
import onnx
import pytest

from toolkit.engines.onnxrt import run_onnx
from toolkit.errors import BadInputError
from toolkit.measurement.compare import cosine_rows
from toolkit.models.export import onnx_from_hf
from toolkit.models.loading import LoadedModel, load_model
from toolkit.models.stress import add_outlier_channel
from toolkit.names import Precision
from toolkit.precision import node_precisions, parse_keep_fp32, precision_census, save_onnx, variant_from_fp32

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Triton serves models over gRPC and HTTP.",
    "A cup of tea on a rainy afternoon is hard to beat.",
    "The committee postponed its decision until the next meeting in March.",
]


@pytest.fixture(scope="module")
def minilm_graphs(minilm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[Precision, Path]:
    folder = tmp_path_factory.mktemp("minilm_variants")
    exported = onnx.load(str(onnx_from_hf(minilm, folder / "export.onnx")))
    return {p: save_onnx(variant_from_fp32(exported, p), folder / f"{p.value}.onnx") for p in Precision}


def _ops(path: Path, op_type: str) -> set[str]:
    graph = onnx.load(str(path))
    precisions = node_precisions(graph)
    return {precisions[node.name] for node in graph.graph.node if node.op_type == op_type}


def test_hybrid_keeps_softmax_and_layernorm_fp32_and_matmul_fp16(minilm_graphs: dict[Precision, Path]) -> None:
    hybrid = minilm_graphs[Precision.HYBRID]
    assert _ops(hybrid, "Softmax") == {"fp32"}
    assert _ops(hybrid, "LayerNormalization") == {"fp32"}
    assert _ops(hybrid, "MatMul") == {"fp16"}


def test_fp16_runs_every_compute_op_in_fp16(minilm_graphs: dict[Precision, Path]) -> None:
    census = precision_census(onnx.load(str(minilm_graphs[Precision.FP16])))
    for op in ("MatMul", "Softmax", "LayerNormalization", "Add"):
        assert set(census[op]) == {"fp16"}, (op, census[op])


def test_fp32_has_no_fp16_node(minilm_graphs: dict[Precision, Path]) -> None:
    census = precision_census(onnx.load(str(minilm_graphs[Precision.FP32])))
    assert all("fp16" not in counts for counts in census.values())


def test_variants_keep_fp32_inputs_and_outputs(minilm_graphs: dict[Precision, Path]) -> None:
    for path in minilm_graphs.values():
        graph = onnx.load(str(path)).graph
        assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT] * len(graph.output)


def _encode(model: LoadedModel, texts: list[str]) -> dict[str, np.ndarray]:
    batch = model.tokenizer(texts, padding=True, return_tensors="np")
    return {name: np.asarray(value, dtype=np.int64) for name, value in batch.items()}


def test_hybrid_is_within_its_floor_and_at_least_as_close_to_fp32_as_fp16_when_real_sentences(
    minilm: LoadedModel, minilm_graphs: dict[Precision, Path]
) -> None:
    inputs = _encode(minilm, SENTENCES)
    valid = inputs["attention_mask"].astype(bool)
    reference = run_onnx(minilm_graphs[Precision.FP32], inputs)["last_hidden_state"][valid]
    worst = {p: float(cosine_rows(reference, run_onnx(minilm_graphs[p], inputs)["last_hidden_state"][valid]).min()) for p in Precision}
    print(f"per-token cosine against FP32, worst token: {worst}")
    assert worst[Precision.HYBRID] >= floors.MINILM_HYBRID, worst
    assert worst[Precision.HYBRID] >= worst[Precision.FP16], f"hybrid is further from FP32 than FP16: {worst}"


def test_fp16_overflows_and_hybrid_does_not_when_residual_channel_is_large(tmp_path: Path) -> None:
    model = add_outlier_channel(load_model("minilm"), 30000.0)
    exported = onnx.load(str(onnx_from_hf(model, tmp_path / "outlier.onnx")))
    inputs = _encode(model, SENTENCES)
    outputs = {}
    for precision in Precision:
        path = save_onnx(variant_from_fp32(exported, precision), tmp_path / f"{precision.value}.onnx")
        outputs[precision] = run_onnx(path, inputs)["last_hidden_state"]
    assert np.isfinite(outputs[Precision.FP32]).all()
    assert not np.isfinite(outputs[Precision.FP16]).all(), "fp16 should overflow on the planted channel"
    assert np.isfinite(outputs[Precision.HYBRID]).all()
    valid = inputs["attention_mask"].astype(bool)
    cosine = float(cosine_rows(outputs[Precision.FP32][valid], outputs[Precision.HYBRID][valid]).min())
    print(f"outlier MiniLM, hybrid per-token cosine against FP32, worst token: {cosine:.9f}")
    assert cosine >= floors.OUTLIER_HYBRID


def test_parse_keep_fp32_rejects_unknown_op_type() -> None:
    with pytest.raises(BadInputError, match="Softmx"):
        parse_keep_fp32("Softmx,LayerNormalization")
    assert parse_keep_fp32("Softmax, LayerNormalization") == ("Softmax", "LayerNormalization")


def test_custom_keep_list_changes_hybrid_policy(minilm: LoadedModel, minilm_graphs: dict[Precision, Path], tmp_path: Path) -> None:
    exported = onnx.load(str(minilm_graphs[Precision.FP32]))
    only_softmax = save_onnx(variant_from_fp32(exported, Precision.HYBRID, ("Softmax",)), tmp_path / "h.onnx")
    assert _ops(only_softmax, "Softmax") == {"fp32"}
    assert _ops(only_softmax, "LayerNormalization") == {"fp16"}


def test_variant_graphs_define_each_tensor_once_when_converter_duplicates_a_cast() -> None:
    from onnx import TensorProto, helper

    from toolkit.precision.policy import _prepared

    cast = {"inputs": ["x"], "outputs": ["y"], "to": TensorProto.FLOAT16, "name": "x_cast"}
    nodes = [
        helper.make_node("Cast", **cast),
        helper.make_node("Cast", **cast),
        helper.make_node("Identity", ["y"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT16, [2])],
    )
    model = _prepared(helper.make_model(graph))
    onnx.checker.check_model(model)
    assert [node.op_type for node in model.graph.node] == ["Cast", "Identity"]


def test_reduced_precision_outputs_are_cast_without_an_identity_copy_when_other_nodes_read_them(
    minilm_graphs: dict[Precision, Path],
) -> None:
    """MiniLM's ``last_hidden_state`` is also read by its pooling: the Cast back to FP32 reads it directly."""
    for precision in (Precision.FP16, Precision.HYBRID):
        graph = onnx.load(str(minilm_graphs[precision])).graph
        identities = {node.output[0] for node in graph.node if node.op_type == "Identity"}
        assert not [node.name for node in graph.node if node.op_type == "Cast" and node.input[0] in identities], precision
        assert "last_hidden_state" in {output.name for output in graph.output}
