"""Policy files: round trip, the graph a build makes from one, absent nodes, and fused graphs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from precision_cases import Case

from toolkit.errors import BadInputError
from toolkit.precision.policy import node_precisions, save_onnx
from toolkit.precision.policy_file import (
    PolicyBar,
    PolicyNode,
    fused_fp32_nodes,
    fused_graph_from_policy,
    graph_from_policy,
    read_policy,
    write_policy,
)
from toolkit.precision.search import SearchResult


def test_read_policy_returns_the_written_policy_when_round_tripped(outlier_search: SearchResult, tmp_path: Path) -> None:
    path = write_policy(outlier_search.policy, tmp_path / "outlier.policy.json")
    again = read_policy(path)
    assert again == outlier_search.policy
    assert again.trace == outlier_search.policy.trace
    assert again.data[0].file == "corpus.txt" and len(again.data[0].sha256 or "") == 64


def test_graph_from_policy_is_the_searched_graph_when_the_build_reads_the_policy_file(
    outlier: Case, outlier_search: SearchResult, tmp_path: Path
) -> None:
    policy = read_policy(write_policy(outlier_search.policy, tmp_path / "p.json"))
    built = graph_from_policy(outlier.graph, policy)
    assert built.SerializeToString() == outlier_search.graph.SerializeToString()


def test_graph_from_policy_lists_every_absent_node_when_policy_names_nodes_not_in_graph(
    outlier: Case, outlier_search: SearchResult
) -> None:
    ghosts = (
        PolicyNode("/module/encoder/layer.7/Add", "Add", "layer.7", ()),
        PolicyNode("/no/such/LayerNorm", "LayerNormalization", "head", ()),
    )
    policy = replace(outlier_search.policy, nodes=outlier_search.policy.nodes + ghosts)
    with pytest.raises(BadInputError, match=r"2 nodes absent from the graph: /module/encoder/layer\.7/Add, /no/such/LayerNorm"):
        graph_from_policy(outlier.graph, policy)


def test_read_policy_names_the_file_when_it_is_not_a_policy(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(BadInputError, match=r"broken\.json is not a JSON policy file"):
        read_policy(broken)
    old = tmp_path / "old.json"
    old.write_text('{"schema_version": 99}')
    with pytest.raises(BadInputError, match=r"old\.json has schema_version 99"):
        read_policy(old)


def test_policy_bar_rejects_limits_when_outside_their_range() -> None:
    with pytest.raises(BadInputError, match=r"--min-cosine 1\.5"):
        PolicyBar(min_cosine=1.5)
    with pytest.raises(BadInputError, match="--min-top1 2"):
        PolicyBar(min_top1=2.0)


def test_fused_graph_from_policy_keeps_embed_layernorm_fp32_when_policy_keeps_the_embedding_sum(
    outlier: Case, outlier_search: SearchResult, tmp_path: Path
) -> None:
    """ONNX Runtime fuses the gathers, the embedding sum and the LayerNorm into one EmbedLayerNormalization:
    the policy's embedding nodes map to it, and the fused Attention and MatMuls stay FP16."""
    from toolkit.runtimes.onnxruntime import fused_onnx

    source = save_onnx(outlier.graph, tmp_path / "fp32.onnx")
    path, stats = fused_onnx(source, tmp_path / "fused.onnx", "bert", 12, 384)
    assert stats.get("EmbedLayerNormalization") == 1
    fused = onnx.load(str(path))
    kept, lost = fused_fp32_nodes(outlier_search.policy, fused, outlier.graph)
    assert {node.op_type for node in fused.graph.node if node.name in kept} == {"EmbedLayerNormalization"} and not lost
    graph = fused_graph_from_policy(fused, outlier_search.policy, outlier.graph)
    precisions = {(node.op_type, node_precisions(graph).get(node.name)) for node in graph.graph.node}
    assert ("EmbedLayerNormalization", "fp32") in precisions
    assert {kind for op, kind in precisions if op in ("Attention", "MatMul", "SkipLayerNormalization")} == {"fp16"}
