"""Repositories made by the real build CLI (``build_engines.py``), served by the real Triton.

GPT-2 (``--model gpt2 --random-weights --layers 2``, the README's offline build) answers with the tokenizer the
build wrote, and the serving flags take effect in the server: instances and queue delay in the configs it
loaded, bucket padding in the tokenizer it runs, batching of mixed-length requests, and no batching at all
with ``--no-dynamic-batching``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from click.testing import CliRunner
from tokenizers import Tokenizer

from build_engines import main as build_cli
from client.api import TritonTextClient
from toolkit.names import NEXT_TOKEN_ID, NEXT_TOKEN_LOGITS, TEXT
from toolkit.repository.naming import engine_model, ensemble_model, tokenizer_model
from toolkit.serving import Ports, running_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]

QUEUE_DELAY_US = 100_000
BUCKETS = (16, 32)
MAX_SEQ = 64
SHAPE = ["--cpu", "--max-batch", "8", "--min-seq", "1", "--opt-seq", "16", "--max-seq", str(MAX_SEQ)]
# GPT-2 keeps its full width (50257-token vocabulary): fp32 only, to keep the build short.
GPT2 = ["--models", "gpt2", "--random-weights", "--layers", "2", "--precisions", "fp32", *SHAPE,
        "--max-queue-delay-us", str(QUEUE_DELAY_US), "--seq-buckets", ",".join(map(str, BUCKETS))]  # fmt: skip
UNBATCHED = "minilm-unbatched"
MINILM = ["--models", "minilm", "--layers", "1", "--name", UNBATCHED, "--precisions", "fp32,hybrid", *SHAPE,
          "--no-dynamic-batching", "--engine-instances", "2"]  # fmt: skip
TEXTS = ["The weather", "Triton serves many models behind one server while the clients wait."]  # rows of different lengths


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Ports]]:
    """(repository, ports): GPT-2 and an unbatched MiniLM built by ``build_engines.py``, served by one server."""
    root = tmp_path_factory.mktemp("built")
    for args in (GPT2, MINILM):
        result = CliRunner().invoke(build_cli, [*args, "--repository", str(root / "repository"), "--work-dir", str(root / "work")])
        assert result.exit_code == 0, result.output
    with running_server(root / "repository", state_dir=root / "server", timeout=300) as handle:
        yield root / "repository", handle.ports


def _url(ports: Ports) -> str:
    return f"127.0.0.1:{ports.grpc}"


def _built_tokenizer(repository: Path) -> Tokenizer:
    """GPT-2's tokenizer as the build wrote it into the repository (trained on data/corpus.txt)."""
    return Tokenizer.from_file(str(repository / tokenizer_model("gpt2") / "1" / "tokenizer" / "tokenizer.json"))


@functools.cache
def _engine_session(repository: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(repository / engine_model("gpt2", "fp32") / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def _next_token_of_engine(repository: Path, ids: list[int]) -> tuple[np.ndarray, int]:
    """The installed FP32 engine run directly by ONNX Runtime on one unpadded row: (next-token logits, id)."""
    session = _engine_session(repository)
    feeds = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), dtype=np.int64)}
    logits, token = session.run([NEXT_TOKEN_LOGITS, NEXT_TOKEN_ID], feeds)
    return logits[0], int(token[0, 0])


def _tokenize(ports: Ports, texts: list[str]) -> dict[str, np.ndarray]:
    tensor = grpcclient.InferInput(TEXT, [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1))
    with grpcclient.InferenceServerClient(_url(ports)) as client:
        result = client.infer(tokenizer_model("gpt2"), [tensor])
    return {name: result.as_numpy(name) for name in ("input_ids", "attention_mask")}


def _statistics(ports: Ports, model: str, settle_s: float = 5.0) -> dict[str, Any]:
    """The model's statistics once two snapshots 0.1 s apart agree on its inference and execution counts (at most
    ``settle_s``): Triton records a request after its response has gone, so a snapshot taken right after the last
    answer can miss the last batch (seen here: 16 of 24 inferences)."""
    keys = ("inference_count", "execution_count")
    with grpcclient.InferenceServerClient(_url(ports)) as client:
        snapshot = dict(client.get_inference_statistics(model, as_json=True)["model_stats"][0])
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            time.sleep(0.1)
            latest = dict(client.get_inference_statistics(model, as_json=True)["model_stats"][0])
            if all(latest.get(key) == snapshot.get(key) for key in keys):
                return latest
            snapshot = latest
        return snapshot


def _counts(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, int]:
    """(inferences, executions) between two statistics snapshots of one model."""
    return tuple(int(after.get(key, 0)) - int(before.get(key, 0)) for key in ("inference_count", "execution_count"))  # type: ignore[return-value]


def test_gpt2_built_by_the_cli_answers_with_its_engines_next_token_when_served(built: tuple[Path, Ports]) -> None:
    repository, ports = built
    tokenizer = _built_tokenizer(repository)
    served = _tokenize(ports, TEXTS)
    outputs = TritonTextClient(_url(ports)).infer_text(ensemble_model("gpt2", "fp32"), TEXTS)
    for row, text in enumerate(TEXTS):
        ids = tokenizer.encode(text).ids
        length = int(served["attention_mask"][row].sum())
        assert served["input_ids"][row, :length].tolist() == ids, "the served tokenizer is not the one the build wrote"
        logits, token = _next_token_of_engine(repository, ids)
        assert int(outputs[NEXT_TOKEN_ID][row, 0]) == token
        np.testing.assert_allclose(outputs[NEXT_TOKEN_LOGITS][row], logits, atol=1e-4)


def test_serving_flags_are_in_the_configs_the_server_loaded_when_built_by_the_cli(built: tuple[Path, Ports]) -> None:
    _, ports = built
    with grpcclient.InferenceServerClient(_url(ports)) as client:
        configs = {name: client.get_model_config(name, as_json=True)["config"] for name in (
            engine_model("gpt2", "fp32"), tokenizer_model("gpt2"),
            engine_model(UNBATCHED, "fp32"), engine_model(UNBATCHED, "hybrid"), tokenizer_model(UNBATCHED),
        )}  # fmt: skip
    for name in (engine_model("gpt2", "fp32"), tokenizer_model("gpt2")):
        assert int(configs[name]["dynamic_batching"]["max_queue_delay_microseconds"]) == QUEUE_DELAY_US, name
    assert [(group["kind"], group["count"]) for group in configs[engine_model("gpt2", "fp32")]["instance_group"]] == [("KIND_CPU", 1)]
    for precision in ("fp32", "hybrid"):
        engine = configs[engine_model(UNBATCHED, precision)]
        assert [(group["kind"], group["count"]) for group in engine["instance_group"]] == [("KIND_CPU", 2)]
        assert "dynamic_batching" not in engine
    assert "dynamic_batching" not in configs[tokenizer_model(UNBATCHED)]


@pytest.mark.parametrize(("words", "width"), [(3, BUCKETS[0]), (20, BUCKETS[1]), (40, MAX_SEQ)])
def test_served_tokenizer_pads_to_the_smallest_bucket_when_built_with_seq_buckets(built: tuple[Path, Ports], words: int, width: int) -> None:
    repository, ports = built
    text = " ".join(["word"] * words)
    smaller = max([0, *(length for length in (*BUCKETS, MAX_SEQ) if length < width)])
    assert smaller < len(_built_tokenizer(repository).encode(text).ids) <= width  # the bucket below is too short
    assert _tokenize(ports, [text, "a"])["input_ids"].shape == (2, width)


def test_mixed_length_multi_row_requests_batch_together_when_their_rows_share_a_bucket(built: tuple[Path, Ports]) -> None:
    repository, ports = built
    tokenizer = _built_tokenizer(repository)
    requests = [[f"request {i} is short", f"request {i} has a row of quite a few more words"] for i in range(12)]
    assert len({len(tokenizer.encode(text).ids) for rows in requests for text in rows}) > 2  # lengths differ
    assert max(len(tokenizer.encode(text).ids) for rows in requests for text in rows) <= BUCKETS[0]  # one bucket holds them all
    expected = {text: _next_token_of_engine(repository, tokenizer.encode(text).ids)[1] for rows in requests for text in rows}
    engine = engine_model("gpt2", "fp32")
    before = _statistics(ports, engine)

    def ask(rows: list[str]) -> list[int]:
        return [int(token) for token in TritonTextClient(_url(ports)).infer_text(ensemble_model("gpt2", "fp32"), rows)[NEXT_TOKEN_ID][:, 0]]

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(ask, requests))
    after = _statistics(ports, engine)
    assert answers == [[expected[text] for text in rows] for rows in requests], "a batched row got another row's answer"
    inferences, executions = _counts(before, after)
    assert inferences == 2 * len(requests)
    assert executions < len(requests), f"{len(requests)} requests ran in {executions} executions: none batched together"
    assert max(int(stats["batch_size"]) for stats in after["batch_stats"]) > 2


def test_concurrent_requests_run_one_by_one_when_built_with_no_dynamic_batching(built: tuple[Path, Ports]) -> None:
    _, ports = built
    engine = engine_model(UNBATCHED, "fp32")
    before = _statistics(ports, engine)

    def ask(i: int) -> None:
        TritonTextClient(_url(ports)).infer_text(ensemble_model(UNBATCHED, "fp32"), [f"sentence number {i}"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(ask, range(16)))
    after = _statistics(ports, engine)
    assert _counts(before, after) == (16, 16)
    assert {int(stats["batch_size"]) for stats in after["batch_stats"]} == {1}
