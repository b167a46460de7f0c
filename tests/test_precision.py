"""Precision variants: per-node precisions, fidelity of hybrid, and the FP16 overflow that hybrid avoids."""

from __future__ import annotations

from pathlib import Path

import fidelity_floors as floors
import numpy as np
import onnx
import pytest

from toolkit.errors import BadInputError
from toolkit.measurement.compare import cosine_rows
from toolkit.models.export import onnx_from_hf
from toolkit.models.loading import LoadedModel, load_model
from toolkit.models.stress import add_outlier_channel
from toolkit.names import Precision
from toolkit.precision import node_precisions, parse_keep_fp32, precision_census, save_onnx, variant_from_fp32
from toolkit.runtimes.onnxruntime import run_onnx

SENTENCES = floors.SENTENCES


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


def _readme_fp32_nodes(exported: onnx.ModelProto) -> dict[str, set[str]]:
    """The nodes of an FP32 export that the README says hybrid keeps in FP32, by claim, found from the graph's shape.

    Residual add: the Add a LayerNorm normalises. Embedding sum: that Add when it only sums embedding Gathers
    (with the Adds and Gathers under it, through Casts). Softmax scale and mask: the Add a Softmax reads, and the Mul/Div/Sub
    feeding that Add. Reductions: every ReduceMean and ReduceSum.
    """
    producer = {output: node for node in exported.graph.node for output in node.output}
    tables = {initializer.name for initializer in exported.graph.initializer}
    claims: dict[str, set[str]] = {"residual add": set(), "embedding sum": set(), "softmax scale and mask": set(), "reduction": set()}

    def parents(node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [producer[name] for name in node.input if name in producer]

    def embedding_sum(node: onnx.NodeProto) -> set[str]:
        if node.op_type == "Gather":
            return {node.name} if node.input[0] in tables else set()
        if node.op_type not in ("Add", "Cast"):
            return set()
        below = [embedding_sum(parent) for parent in parents(node)]
        own = {node.name} if node.op_type == "Add" else set()  # a Cast has no precision of its own
        return own.union(*below) if below and all(below) else set()

    for node in exported.graph.node:
        if node.op_type == "LayerNormalization" and (add := producer[node.input[0]]).op_type == "Add":
            summed = embedding_sum(add)
            claims["embedding sum" if summed else "residual add"] |= summed or {add.name}
        elif node.op_type == "Softmax" and (add := producer[node.input[0]]).op_type == "Add":
            claims["softmax scale and mask"] |= {add.name} | {p.name for p in parents(add) if p.op_type in ("Mul", "Div", "Sub")}
        elif node.op_type in ("ReduceMean", "ReduceSum"):
            claims["reduction"].add(node.name)
    return claims


@pytest.mark.parametrize("fixture", ["minilm", "tiny_gpt2"])
def test_hybrid_keeps_residual_adds_embedding_sums_softmax_inputs_and_reductions_fp32_when_exported(
    fixture: str, request: pytest.FixtureRequest, minilm_graphs: dict[Precision, Path], export_dir: Path
) -> None:
    if fixture == "minilm":
        exported = onnx.load(str(minilm_graphs[Precision.FP32]))
    else:
        exported = onnx.load(str(onnx_from_hf(request.getfixturevalue(fixture), export_dir / "gpt2_policy.onnx")))
    claims = _readme_fp32_nodes(exported)
    expected = {"residual add", "embedding sum", "softmax scale and mask"} | ({"reduction"} if fixture == "minilm" else set())
    assert {claim for claim, nodes in claims.items() if nodes} == expected, claims  # MiniLM pools with ReduceSum, GPT-2 does not
    precisions = node_precisions(variant_from_fp32(exported, Precision.HYBRID))
    wrong = {claim: {name: precisions.get(name) for name in nodes if precisions.get(name) != "fp32"} for claim, nodes in claims.items()}
    assert not any(wrong.values()), wrong
    assert {precisions[node.name] for node in exported.graph.node if node.op_type == "MatMul"} == {"fp16"}


def test_hybrid_keeps_reduce_mean_and_what_feeds_it_fp32_when_layernorm_is_decomposed() -> None:
    """A hand-written LayerNorm (ReduceMean, Sub, Pow, ...) after a residual add, as older exports write it.

    The README's claim: ReduceMean in FP32 with the element-wise ops that feed it (the residual add, the
    centring, the square). What follows the variance's ReduceMean (+eps, Sqrt, Div) is not part of it.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((8, 8)).astype(np.float32), "two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="linear"),
        helper.make_node("Add", ["y", "x"], ["residual"], name="residual_add"),
        helper.make_node("ReduceMean", ["residual"], ["mean"], name="mean", axes=[-1]),
        helper.make_node("Sub", ["residual", "mean"], ["centred"], name="centre"),
        helper.make_node("Pow", ["centred", "two"], ["squared"], name="square"),
        helper.make_node("ReduceMean", ["squared"], ["variance"], name="variance", axes=[-1]),
        helper.make_node("Add", ["variance", "eps"], ["shifted"], name="add_eps"),
        helper.make_node("Sqrt", ["shifted"], ["deviation"], name="sqrt"),
        helper.make_node("Div", ["centred", "deviation"], ["out"], name="normalise"),
    ]
    graph = helper.make_graph(
        nodes, "decomposed_layernorm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    precisions = node_precisions(variant_from_fp32(model, Precision.HYBRID))
    kept = ("residual_add", "mean", "centre", "square", "variance")
    assert {name: precisions[name] for name in kept} == dict.fromkeys(kept, "fp32")
    assert precisions["linear"] == "fp16"


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
    assert worst[Precision.FP16] >= floors.MINILM_FP16, worst
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


def test_hybrid_fp32_nodes_read_fp32_values_without_an_fp16_round_trip(minilm_graphs: dict[Precision, Path]) -> None:
    """A LayerNorm output read by the next residual Add (FP32) and by MatMuls (FP16) reaches the Add directly,
    not as Cast(FP32)(Cast(FP16)(x)): the hybrid keeps what feeds LayerNorm in FP32, rounding included."""
    graph = onnx.load(str(minilm_graphs[Precision.HYBRID])).graph
    producer = {output: node for node in graph.node for output in node.output}

    def cast_to(node: onnx.NodeProto | None, target: int) -> bool:
        return node is not None and node.op_type == "Cast" and node.attribute[0].i == target

    round_trips = [
        node.name
        for node in graph.node
        if cast_to(node, onnx.TensorProto.FLOAT) and cast_to(producer.get(node.input[0]), onnx.TensorProto.FLOAT16)
    ]
    assert not round_trips, round_trips
