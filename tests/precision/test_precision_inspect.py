"""The precision report: where FP16 breaks, on text and on random ids side by side."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from precision_cases import Case, make_case

from toolkit.models.loading import load_model
from toolkit.precision.data import random_dataset
from toolkit.precision.emulate import fp16_emulation
from toolkit.precision.inspect import PrecisionReport, precision_report, read_report, write_report
from toolkit.precision.policy_file import graph_from_fp32_nodes
from toolkit.precision.probe import prepared_copy, run_session, session_of
from toolkit.precision.report_views import format_report

TINY_BERT = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}


def test_precision_report_names_embedding_sum_as_first_overflow_when_outlier_channel(outlier_report: PrecisionReport) -> None:
    for kind in ("text", "random"):
        first = outlier_report.runs[kind].first_nonfinite
        assert first is not None and first.node == "/module/embeddings/Add_1", kind
        assert first.block == "embeddings"
        stats = {node.name: node.stats for node in outlier_report.runs[kind].nodes}
        assert stats[first.node].headroom < 1.0  # 3 x 30000 in FP32: past FP16's 65504
        assert stats["/module/embeddings/Add"].headroom > 1.0  # 2 x 30000 still fits
    embeddings = next(block for block in outlier_report.runs["text"].blocks if block.block == "embeddings")
    assert embeddings.nonfinite_nodes > 0 and embeddings.headroom < 1.0
    assert "first non-finite node /module/embeddings/Add_1" in format_report(outlier_report)


def test_precision_report_overflows_on_text_but_not_on_random_ids_when_outlier_sits_in_rows_text_uses(tmp_path: Path) -> None:
    """The word-embedding rows of ids below 20000 (every common WordPiece token, [CLS] = 101, [SEP] = 102)
    carry 40000 in channel 0 and the token-type row 30000: their sum, 70000, overflows FP16 on any real text.
    Random ids drawn from [20000, vocab) never read those rows, so on them the same model looks safe: a
    random-id check would have passed it."""
    model = load_model("bert-base-uncased", random_weights=True, name="text-outlier", config_overrides=TINY_BERT)
    embeddings = model.module.embeddings
    with torch.no_grad():
        embeddings.word_embeddings.weight[:20000, 0] = 40000.0
        embeddings.token_type_embeddings.weight[:, 0] = 30000.0
    case = make_case(model, tmp_path)
    random = random_dataset(model.vocab_size, 4, 32, 2, id_range=(20000, model.vocab_size))
    report = precision_report(case.graph, [case.text, random], model_name=model.name)
    text_first = report.runs["text"].first_nonfinite
    assert text_first is not None and text_first.block == "embeddings" and text_first.op_type == "Add"
    assert report.runs["random"].first_nonfinite is None
    assert all(output.nonfinite == 0 for output in report.runs["random"].outputs.values())
    assert all(output.nonfinite > 0 for output in report.runs["text"].outputs.values())


def test_write_report_round_trips_json_and_draws_png_when_written(outlier_report: PrecisionReport, tmp_path: Path) -> None:
    written = write_report(outlier_report, tmp_path)
    assert [path.name for path in written] == ["report.json", "report.png"]
    assert written[1].stat().st_size > 10_000
    again = read_report(written[0])
    assert again.first_bad("text") == outlier_report.first_bad("text")
    assert [block.block for block in again.runs["random"].blocks] == ["embeddings", "layer.0", "layer.1", "head"]
    first, second = again.runs["text"].nodes[0].stats, outlier_report.runs["text"].nodes[0].stats
    assert first.fp32_max_abs == second.fp32_max_abs and (first.cosine_min == second.cosine_min or math.isnan(second.cosine_min))


def test_fp16_emulation_overflows_where_cpu_provider_keeps_fp32_when_sum_feeds_fp32_layernorm(outlier: Case) -> None:
    """ONNX Runtime's CPU provider runs the FP16 Add in FP32 and drops the cast pair before the FP32 LayerNorm,
    so 90000 stays finite there; a GPU stores the Add's output in FP16 (Inf). The emulation does too."""
    prepared = prepared_copy(outlier.graph)
    graph = graph_from_fp32_nodes(prepared, {"/module/embeddings/LayerNorm/LayerNormalization"})
    batch = outlier.text.batches[0]
    native = run_session(session_of(graph), batch)["last_hidden_state"]
    emulated = run_session(session_of(fp16_emulation(graph)), batch)["last_hidden_state"]
    assert np.isfinite(native).all()
    assert not np.isfinite(emulated).any()


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_gpt2"])
def test_fp16_emulation_equals_fp32_graph_when_every_node_stays_fp32(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A policy keeping every compute node FP32 is the FP32 graph value for value: no FP16 round trip is left
    between FP32 nodes (``policy.bypass_fp16_round_trips``), and constants read only by FP32 nodes stay FP32."""
    from toolkit.precision.probe import compute_node_names

    case = make_case(request.getfixturevalue(fixture), tmp_path)
    prepared = prepared_copy(case.graph)
    graph = fp16_emulation(graph_from_fp32_nodes(prepared, compute_node_names(prepared)))
    batch = case.text.batches[0]
    reference, got = run_session(session_of(prepared), batch), run_session(session_of(graph), batch)
    for name, value in reference.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
