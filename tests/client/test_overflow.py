"""Fidelity on an overflow model, without a server: fp16 overflows on real text, hybrid does not.

The tiny BERT's embeddings are scaled so that, for the most frequent tokens of the shipped corpus,
word + position embedding exceeds FP16's 65504 only in the sum feeding the first LayerNorm. The
hybrid policy keeps that sum in FP32; the fp16 graph turns it into Inf and then NaN. Random ids
rarely hit those tokens, so they underestimate the NaN/Inf rate that real text shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import fidelity_floors as floors
import numpy as np
import pytest

from client.fidelity import check_records, format_table, random_vs_text, run_fidelity
from client.inputs import load_corpus
from client.reference import OnnxReference
from toolkit.artifacts import ServedModel
from toolkit.models.tokenizers import load_tokenizer_file
from toolkit.names import LAST_HIDDEN_STATE, Precision
from toolkit.repository.naming import engine_model

pytestmark = pytest.mark.timeout(300)
FREQUENT_TOKENS = 60
SCALE = 36_000.0  # one embedding at this size fits FP16; two summed (72 000) do not


class LocalEngines:
    """The part of ``TritonTextClient`` that ``run_fidelity`` uses, served by local ONNX Runtime sessions."""

    def __init__(self, engines: Mapping[str, Path]) -> None:
        self.sessions = {name: OnnxReference(path) for name, path in engines.items()}

    def require_model(self, model: str) -> None:
        assert model in self.sessions, model

    def input_names(self, model: str) -> list[str]:
        return self.sessions[model].input_names

    def output_names(self, model: str) -> list[str]:
        return self.sessions[model].output_names

    def infer_many(
        self,
        model: str,
        requests: Sequence[Mapping[str, np.ndarray]],
        concurrency: int = 1,
        outputs: Sequence[str] | None = None,
        progress: bool = False,
        timings: list[float] | None = None,
    ) -> list[dict[str, np.ndarray]]:
        if timings is not None:
            timings.extend(0.0 for _ in requests)  # local sessions: no round trip to time
        return [self.sessions[model].run(request, outputs) for request in requests]


def _overflow_graph(source: Path, token_ids: list[int], target: Path) -> Path:
    """Copy of ``source`` with ``token_ids``' word embeddings and every position embedding set to +SCALE."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for initializer in model.graph.initializer:
        if "word_embeddings" in initializer.name or "position_embeddings" in initializer.name:
            table = numpy_helper.to_array(initializer).copy()
            rows = token_ids if "word_embeddings" in initializer.name else slice(None)
            table[rows] = SCALE
            initializer.CopyFrom(numpy_helper.from_array(table, initializer.name))
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope="module")
def overflow_engines(bert_model: ServedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import onnx

    from toolkit.precision import save_onnx, variant_from_fp32

    folder = tmp_path_factory.mktemp("overflow")
    tokenizer = load_tokenizer_file(bert_model.tokenizer_dir)
    counts = Counter(i for e in tokenizer.encode_batch(load_corpus(), add_special_tokens=False) for i in e.ids)
    frequent = [token for token, _ in counts.most_common(FREQUENT_TOKENS)]
    fp32 = _overflow_graph(bert_model.engines[0].path, frequent, folder / "fp32.onnx")
    engines = {engine_model("overflow", Precision.FP32): fp32}
    for precision in (Precision.FP16, Precision.HYBRID):
        graph = variant_from_fp32(onnx.load(str(fp32)), precision)
        engines[engine_model("overflow", precision)] = save_onnx(graph, folder / f"{precision.value}.onnx")
    return engines


def test_fp16_overflows_and_hybrid_stays_finite_when_real_text(bert_model: ServedModel, overflow_engines: dict[str, Path]) -> None:
    tokenizer = load_tokenizer_file(bert_model.tokenizer_dir)
    reference = OnnxReference(overflow_engines[engine_model("overflow", Precision.FP32)])
    records = run_fidelity(
        LocalEngines(overflow_engines),  # type: ignore[arg-type]
        reference,
        tokenizer,
        "overflow",
        ["fp32", "fp16", "hybrid"],
        [4],
        [bert_model.max_seq_len],
        ["random", "text"],
        requests=2,
        progress=False,
    )
    print(format_table(records))
    by = {(r.precision, r.inputs): r.outputs[LAST_HIDDEN_STATE] for r in records}
    assert by["fp16", "text"].nan_rate + by["fp16", "text"].inf_rate > 0.05
    for kind in ("random", "text"):
        assert by["hybrid", kind].nan_rate == by["hybrid", kind].inf_rate == 0.0
        assert by["fp32", kind].cosine_min >= floors.FP32_REORDERED
    assert by["hybrid", "text"].cosine_min >= floors.EMBEDDING_OVERFLOW_HYBRID

    gaps = {(g["precision"], g["output"]): g for g in random_vs_text(records)}
    assert gaps["fp16", LAST_HIDDEN_STATE]["nan_rate_verdict"] == "underestimates"
    assert gaps["hybrid", LAST_HIDDEN_STATE]["nan_rate_verdict"] == "agrees"

    failing = {(m.case.split()[0], m.metric) for m in check_records(records)}
    assert ("overflow/fp16/onnxruntime", "nan_rate") in failing
    assert not any(case.startswith(("overflow/hybrid", "overflow/fp32")) for case, _ in failing)


def test_local_engines_cover_the_client_surface_run_fidelity_uses() -> None:
    from client.api import TritonTextClient

    for method in ("require_model", "input_names", "output_names", "infer_many"):
        assert callable(getattr(TritonTextClient, method)) and callable(getattr(LocalEngines, method))
