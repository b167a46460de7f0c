"""The client and fidelity against the real tritonserver serving tiny BERT/GPT-2 in three precisions.

The tiny models come from the serving tests' fixtures (``tests/serving/conftest.py``); their fp16 and
hybrid variants from ``toolkit.precision``. A second module-scoped server serves the built MiniLM
repository when ``model_repository/`` holds it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import fidelity_floors as floors
import numpy as np
import pytest

from client.api import TritonTextClient
from client.cli import main
from client.fidelity import FidelityRecord, Tolerances, check_records, run_fidelity
from client.inputs import make_batches
from client.reference import OnnxReference, reference_onnx_path
from toolkit.artifacts import EngineArtifact, ServedModel
from toolkit.errors import BadInputError
from toolkit.measurement.compare import cosine_rows
from toolkit.models.tokenizers import load_tokenizer_file
from toolkit.names import (
    DEFAULT_PRECISIONS,
    LAST_HIDDEN_STATE,
    LOGITS,
    NEXT_TOKEN_ID,
    NEXT_TOKEN_LOGITS,
    SENTENCE_EMBEDDING,
    Precision,
)
from toolkit.repository.lookup import find_tokenizer
from toolkit.repository.naming import engine_model, ensemble_model, tokenizer_model

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]


def _width(model: ServedModel, output: str) -> int:
    """The width of one of the engines' outputs (an embedding's dimension, a vocabulary's size)."""
    return next(spec.dims[-1] for spec in model.engines[0].outputs if spec.name == output)


def _with_variants(model: ServedModel, folder: Path) -> ServedModel:
    """``model`` plus the fp16 and hybrid engines the precision policy makes from its fp32 graph."""
    import onnx

    from toolkit.precision import save_onnx, variant_from_fp32

    fp32 = model.engines[0]
    engines = [fp32]
    for precision in (Precision.FP16, Precision.HYBRID):
        path = save_onnx(variant_from_fp32(onnx.load(str(fp32.path)), precision), folder / f"{model.name}_{precision.value}.onnx")
        engines.append(EngineArtifact(precision, "onnxruntime", path, fp32.outputs))
    return dataclasses.replace(model, engines=engines)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bert_model: ServedModel, gpt2_model: ServedModel) -> Iterator[tuple[str, Path]]:
    """(grpc url, repository) of a server with tinybert and tinygpt2 in fp32, fp16 and hybrid."""
    from toolkit.repository.configs import ServingOptions
    from toolkit.repository.layout import write_model_repository
    from toolkit.serving import running_server

    root = tmp_path_factory.mktemp("client_server")
    repository = root / "repository"
    for model in (bert_model, gpt2_model):
        full = _with_variants(model, root / "variants")
        write_model_repository(repository, full, options=ServingOptions(intra_op_threads=1))
    with running_server(repository, state_dir=root / "server", timeout=240) as handle:
        yield f"127.0.0.1:{handle.ports.grpc}", repository


@pytest.fixture(scope="module")
def client(served: tuple[str, Path]) -> TritonTextClient:
    return TritonTextClient(served[0], retries=2)


def _fidelity(client: TritonTextClient, repository: Path, name: str, **kwargs: object) -> list[FidelityRecord]:
    reference = OnnxReference(reference_onnx_path(repository, name))
    tokenizer = load_tokenizer_file(find_tokenizer(repository, name))
    options: dict[str, object] = {
        "batch_sizes": [1, 4], "seq_lens": [8, 24], "input_kinds": ["random", "text", "sentences"], "progress": False,
    }  # fmt: skip
    options.update(kwargs)
    if "precisions" not in options:  # every variant the server has
        options["precisions"] = [p.value for p in DEFAULT_PRECISIONS]
    return run_fidelity(client, reference, tokenizer, name, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_text_returns_embeddings_when_bert_ensemble(
    served: tuple[str, Path], bert_model: ServedModel, protocol: Literal["grpc", "http"]
) -> None:
    url = served[0]
    if protocol == "http":
        from toolkit.serving.server import read_handle

        handle = read_handle(served[1].parent / "server")
        assert handle is not None
        url = f"127.0.0.1:{handle.ports.http}"
    out = TritonTextClient(url, protocol=protocol).infer_text(ensemble_model("tinybert", "fp32"), ["hi", "a b c"])
    assert out[SENTENCE_EMBEDDING].shape == (2, _width(bert_model, SENTENCE_EMBEDDING))
    assert np.isfinite(out[SENTENCE_EMBEDDING]).all()


def test_infer_text_returns_next_token_when_gpt2_ensemble(client: TritonTextClient, gpt2_model: ServedModel) -> None:
    out = client.infer_text(ensemble_model("tinygpt2", "fp32"), ["the quick brown"])
    assert 0 <= int(out[NEXT_TOKEN_ID][0, 0]) < _width(gpt2_model, NEXT_TOKEN_LOGITS)


def test_infer_lists_available_models_when_model_unknown(client: TritonTextClient) -> None:
    with pytest.raises(BadInputError, match=r"'nomodel_fp32' is not ready.*available: .*tinybert_fp32") as caught:
        client.infer_text("nomodel_fp32", ["x"])
    assert "\n" not in str(caught.value)


def test_infer_ids_same_when_system_shared_memory(client: TritonTextClient, served: tuple[str, Path]) -> None:
    tokenizer = load_tokenizer_file(find_tokenizer(served[1], "tinybert"))
    batch = make_batches("text", 2, 16, 1, tokenizer)[0]
    engine = engine_model("tinybert", "fp32")
    plain = client.infer_ids(engine, batch.input_ids, batch.attention_mask, batch.token_type_ids)
    shared = client.infer_ids(engine, batch.input_ids, batch.attention_mask, batch.token_type_ids,
                              shared_memory="system")  # fmt: skip
    np.testing.assert_array_equal(plain[LAST_HIDDEN_STATE], shared[LAST_HIDDEN_STATE])


def test_infer_many_keeps_request_order_when_concurrent(client: TritonTextClient, served: tuple[str, Path]) -> None:
    tokenizer = load_tokenizer_file(find_tokenizer(served[1], "tinybert"))
    engine = engine_model("tinybert", "fp32")
    requests = [b.inputs(client.input_names(engine)) for b in make_batches("random", 2, 8, 6, tokenizer)]
    many = client.infer_many(engine, requests, concurrency=3, progress=False)
    for request, result in zip(requests, many, strict=True):
        np.testing.assert_array_equal(client.infer(engine, request)[LAST_HIDDEN_STATE], result[LAST_HIDDEN_STATE])


def test_every_served_precision_within_tolerance_when_bert(client: TritonTextClient, served: tuple[str, Path]) -> None:
    records = _fidelity(client, served[1], "tinybert")
    assert len(records) == len({r.precision for r in records}) * 2 * 2 * 3
    assert {"fp32", "fp16"} <= {r.precision for r in records}
    for record in records:
        metrics = record.outputs[LAST_HIDDEN_STATE]
        assert metrics.nan_rate == 0.0 and metrics.inf_rate == 0.0
        if record.precision == "fp32":
            assert metrics.cosine_min >= floors.FP32_REORDERED and metrics.max_abs < 1e-4, record.case
        else:
            assert metrics.cosine_min >= floors.SERVED_TINY["tinybert", record.precision], record.case
    assert check_records(records, Tolerances()) == []


def test_hybrid_ensemble_answers_with_its_hybrid_graphs_embeddings_when_bert(client: TritonTextClient, served: tuple[str, Path]) -> None:
    """Text in, through the served tokenizer and hybrid engine: the embedding ONNX Runtime gives on the installed hybrid graph."""
    texts = ["hello world", "the quick brown fox jumps over the lazy dog"]
    out = client.infer_text(ensemble_model("tinybert", "hybrid"), texts)[SENTENCE_EMBEDDING]
    tokens = client.infer_text(tokenizer_model("tinybert"), texts)
    graph = OnnxReference(served[1] / engine_model("tinybert", "hybrid") / "1" / "model.onnx")
    feeds = {name: tokens[name] for name in graph.input_names}
    np.testing.assert_allclose(out, graph.run(feeds, [SENTENCE_EMBEDDING])[SENTENCE_EMBEDDING], atol=1e-5)


def test_fp32_top1_agrees_fully_and_variants_stay_within_their_floors_when_gpt2(client: TritonTextClient, served: tuple[str, Path]) -> None:
    records = _fidelity(client, served[1], "tinygpt2", input_kinds=["random", "text"])
    for record in records:
        if record.precision == "fp32":
            assert record.outputs[LOGITS].top1_agreement == 1.0, record.case
        else:
            assert record.outputs[LOGITS].cosine_min >= floors.SERVED_TINY["tinygpt2", record.precision], record.case
        assert record.outputs[LOGITS].top1_agreement is not None
    assert check_records(records, Tolerances()) == []


def test_cli_infer_and_fidelity_succeed_when_server_up(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, repository = served
    assert main(["infer", "hello world", "--models", "tinygpt2", "--url", url, "--repository", str(repository)]) == 0
    assert "next token id" in capsys.readouterr().out
    assert main(["infer", "hello", "--models", "tinybert", "--precisions", "fp32,fp16", "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["tinybert fp32", "tinybert fp16"] and all("norm" in line for line in lines)
    precisions = "fp32,fp16"
    code = main([
        "fidelity", "--models", "tinybert", "--precisions", precisions, "--batch-sizes", "2", "--seq-lens", "16",
        "--inputs", "random,text", "--url", url, "--repository", str(repository), "--out", str(tmp_path),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Random ids vs real text" in out
    (written,) = tmp_path.glob("*/fidelity_*.json")
    payload = json.loads(written.read_text())
    assert len(payload["records"]) == 4 and payload["environment"]["packages"]["tritonclient"]
    summary = out[out.index("Summary:") :].splitlines()
    assert [row.split()[:2] for row in summary[2:4]] == [["tinybert", "fp32"], ["tinybert", "fp16"]]
    assert all(row.endswith("PASS") and " ms (b2 s16, 2 in flight)" in row for row in summary[2:4]), summary
    assert summary[-1] == f"full record: {written}"
    assert all(record["latency_ms"] > 0 and record["concurrency"] == 2 for record in payload["records"])


def test_cli_fails_with_one_line_when_model_unknown(served: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "hello", "--models", "nomodel", "--url", served[0]]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "available:" in err


# -- the built MiniLM repository (the lead's build) --------------------------------------------------


@pytest.fixture(scope="module")
def minilm_url(tmp_path_factory: pytest.TempPathFactory, minilm_repository: Path) -> Iterator[str]:
    from toolkit.serving import running_server

    with running_server(minilm_repository, state_dir=tmp_path_factory.mktemp("minilm_server"), timeout=300) as handle:
        yield f"127.0.0.1:{handle.ports.grpc}"


def test_minilm_hybrid_within_its_floor_when_real_text_is_served(minilm_url: str, minilm_repository: Path) -> None:
    client = TritonTextClient(minilm_url, retries=2)
    records = _fidelity(client, minilm_repository, "minilm", precisions=["fp32", "hybrid"], batch_sizes=[8],
                        seq_lens=[128], input_kinds=["text", "sentences"])  # fmt: skip
    for record in records:
        metrics = record.outputs[LAST_HIDDEN_STATE]
        limit = floors.FP32_REORDERED if record.precision == "fp32" else floors.SERVED_MINILM_HYBRID[record.inputs]
        print(f"{record.case}: worst per-token cosine {metrics.cosine_min:.9f} (floor {limit:.9f})")
        assert metrics.cosine_min >= limit, record.case
        assert metrics.nan_rate == 0.0 and metrics.inf_rate == 0.0


def test_minilm_served_sentence_embedding_equals_sentence_transformers_encode(minilm_url: str) -> None:
    """The served vector is the library's own: mean pooling then Normalize, read from the checkpoint's files."""
    from sentence_transformers import SentenceTransformer

    from client.inputs import read_corpus
    from toolkit.models.tokenizers import minilm_folder

    texts = read_corpus()[:8]  # the fixture's max batch
    encoded = SentenceTransformer(str(minilm_folder()), device="cpu").encode(texts, convert_to_numpy=True)
    client = TritonTextClient(minilm_url, retries=2)
    for precision, floor in (("fp32", 0.9999), ("hybrid", 0.999)):
        served = client.infer_text(ensemble_model("minilm", precision), texts)[SENTENCE_EMBEDDING]
        assert cosine_rows(encoded, served).min() >= floor, precision
        np.testing.assert_allclose(np.linalg.norm(served, axis=-1), np.linalg.norm(encoded, axis=-1), rtol=0.01)


def test_infer_raises_one_line_server_error_when_input_missing(client: TritonTextClient) -> None:
    from toolkit.errors import ServerError

    with pytest.raises(ServerError, match=r"inference on 'tinybert_fp32_onnx' at .* failed: .*missing") as caught:
        client.infer(engine_model("tinybert", "fp32"), {"input_ids": np.ones((1, 4), dtype=np.int64)})
    assert "\n" not in str(caught.value)
