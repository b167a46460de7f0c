"""The policy search: the cheapest FP32 set that meets the bar, against fp16, hybrid and the baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from precision_cases import Case, make_case

from toolkit.precision.policy import node_precisions
from toolkit.precision.policy_file import PolicyBar
from toolkit.precision.search import SearchResult, search_policy
from toolkit.precision.variants import BASELINE, variant_rows


def test_search_policy_keeps_embedding_path_fp32_and_every_matmul_fp16_when_outlier_channel(outlier_search: SearchResult) -> None:
    policy = outlier_search.policy
    assert policy.met, policy.message
    assert "/module/embeddings/Add_1" in policy.node_names  # the sum that overflows
    assert {node.block for node in policy.nodes} == {"embeddings"}
    assert len(policy.nodes) <= 4
    precisions = node_precisions(outlier_search.graph)
    matmuls = {precisions[node.name] for node in outlier_search.graph.graph.node if node.op_type in ("MatMul", "Gemm")}
    assert matmuls == {"fp16"}
    fp16_step = policy.trace[0]
    assert fp16_step.action == "fp16" and not fp16_step.met and fp16_step.nonfinite > 0  # fp16 fails the same bar
    assert len(policy.trace) <= 12


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_gpt2"])
def test_search_policy_keeps_no_node_fp32_when_fp16_meets_the_bar(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    case = make_case(request.getfixturevalue(fixture), tmp_path)
    result = search_policy(case.graph, case.text, PolicyBar(), model_name=case.model.name)
    assert result.policy.met and result.policy.nodes == ()
    step = result.policy.trace[0]
    assert step.worst_cosine is not None and step.worst_cosine >= 0.9998 and step.nonfinite == 0
    if fixture == "tiny_gpt2":
        assert step.min_top1 is not None and step.min_top1 >= 0.99  # next-token agreement judged


def test_search_policy_stops_with_the_closest_candidate_when_even_all_fp32_fails_the_bar(tiny_bert: object, tmp_path: Path) -> None:
    """Word and token-type embeddings of 3e38 overflow FP32 itself (their sum is Inf): no policy can give finite
    outputs, so after full FP16 and all-FP32 both fail, the search ends with a message instead of growing and
    pruning. (A bar of cosine 1.0 does not do this here: all-FP32 policy graphs are the FP32 graph bit for bit.)"""
    case = make_case(tiny_bert, tmp_path)  # type: ignore[arg-type]
    graph = onnx.ModelProto()
    graph.CopyFrom(case.graph)
    for index, init in enumerate(graph.graph.initializer):
        if "word_embeddings" in init.name or "token_type_embeddings" in init.name:
            table = numpy_helper.to_array(init).copy()
            table[:, 0] = np.float32(3e38)
            graph.graph.initializer[index].CopyFrom(numpy_helper.from_array(table, init.name))
    result = search_policy(graph, case.text, PolicyBar(), model_name="broken")
    assert not result.policy.met
    assert "no policy meets the bar: even all" in result.policy.message
    assert [step.action for step in result.policy.trace] == ["fp16", "all-fp32"]


def test_variant_rows_judge_fp16_hybrid_auto_and_baseline_on_the_same_data_and_bar(outlier: Case, outlier_search: SearchResult) -> None:
    rows = {
        row.variant: row
        for row in variant_rows(
            outlier.graph, outlier.text, PolicyBar(), outlier_search.policy, outlier_search.costs, "outlier", baseline=False
        )
    }
    assert list(rows) == ["fp16", "hybrid", "auto"]
    assert not rows["fp16"].met and rows["fp16"].nonfinite > 0
    assert rows["hybrid"].met and rows["auto"].met
    assert rows["auto"].fp32_nodes < rows["hybrid"].fp32_nodes
    assert rows["auto"].fp32_flop_share < rows["hybrid"].fp32_flop_share < 0.01


def test_variant_rows_include_the_baseline_when_asked(tiny_bert: object, tmp_path: Path) -> None:
    case = make_case(tiny_bert, tmp_path)  # type: ignore[arg-type]
    result = search_policy(case.graph, case.text, PolicyBar(), model_name="bert-tiny")
    rows = variant_rows(case.graph, case.text, PolicyBar(), result.policy, result.costs, "bert-tiny")
    baseline = rows[-1]
    assert baseline.variant == BASELINE and baseline.met, baseline.note
    assert baseline.fp32_nodes == 0
