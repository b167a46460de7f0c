"""The real tritonserver (nvidia-pytriton's binary) serving generated repositories of tiny models."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from click.testing import CliRunner
from listening import listening_addresses
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

from client.inputs import read_corpus
from toolkit.artifacts import EngineArtifact, ServedModel
from toolkit.errors import ServerError
from toolkit.names import (
    LAST_HIDDEN_STATE,
    NEXT_TOKEN_ID,
    NEXT_TOKEN_LOGITS,
    SENTENCE_EMBEDDING,
    TEXT,
    TRUNCATED,
)
from toolkit.repository.configs import ServingOptions
from toolkit.repository.layout import write_model_repository
from toolkit.repository.naming import engine_model, ensemble_model, tokenizer_model
from toolkit.serving import Ports, ServerOptions, docker_command, free_ports, running_server
from toolkit.serving.cli import main as cli
from toolkit.serving.server import LOG_TAIL_LINES, is_ready, port_in_use, server_environment

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]


def _width(model: ServedModel, output: str) -> int:
    """The width of one of the engines' outputs (an embedding's dimension, a vocabulary's size)."""
    return next(spec.dims[-1] for spec in model.engines[0].outputs if spec.name == output)

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "triton"]
BERT_BUCKETS = (8, 16)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, bert_model: ServedModel, gpt2_model: ServedModel) -> Iterator[Ports]:
    """One server for both tiny models; a 20 ms queue delay makes dynamic batches likely.

    BERT's tokenizer pads to the buckets 8, 16 (and its max, 24); GPT-2's to the longest row.
    """
    root = tmp_path_factory.mktemp("serving")
    options = ServingOptions(max_queue_delay_us=20_000, intra_op_threads=1)
    write_model_repository(root / "repository", bert_model, options=dataclasses.replace(options, seq_buckets=BERT_BUCKETS))
    write_model_repository(root / "repository", gpt2_model, options=options)
    with running_server(root / "repository", state_dir=root / "server", timeout=180) as handle:
        yield handle.ports
    assert not any(port_in_use(port) for port in handle.ports.as_list()), "ports still open after stop"


def _text_input(texts: list[bytes], client: ModuleType = grpcclient) -> Any:
    tensor = client.InferInput(TEXT, [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object).reshape(-1, 1))
    return tensor


def _shipped_tokenizer(model: ServedModel) -> Tokenizer:
    """The model's tokenizer as shipped, unpadded and truncated as the served tokenizer model truncates."""
    tokenizer = Tokenizer.from_file(str(model.tokenizer_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(model.max_seq_len)
    return tokenizer


def _reference(model: ServedModel, text: str) -> dict[str, np.ndarray]:
    """Direct onnxruntime run on one unpadded text, post-processed in numpy."""
    encoding = _shipped_tokenizer(model).encode(text)
    feeds = {"input_ids": np.array([encoding.ids]), "attention_mask": np.array([encoding.attention_mask])}
    if "token_type_ids" in model.engine_inputs:
        feeds["token_type_ids"] = np.array([encoding.type_ids])
    session = ort.InferenceSession(str(model.engines[0].path), providers=["CPUExecutionProvider"])
    output = session.run([model.engines[0].outputs[0].name], feeds)[0]
    if SENTENCE_EMBEDDING in model.ensemble_outputs:
        return {LAST_HIDDEN_STATE: output[0], SENTENCE_EMBEDDING: output[0].mean(axis=0)}
    return {NEXT_TOKEN_LOGITS: output[0, -1], NEXT_TOKEN_ID: np.array([output[0, -1].argmax()])}


def _infer(ports: Ports, protocol: str, model_name: str, texts: list[bytes]) -> dict[str, np.ndarray]:
    if protocol == "grpc":
        with grpcclient.InferenceServerClient(f"127.0.0.1:{ports.grpc}") as client:
            result = client.infer(model_name, [_text_input(texts, grpcclient)])
    else:
        with httpclient.InferenceServerClient(f"127.0.0.1:{ports.http}") as client:
            result = client.infer(model_name, [_text_input(texts, httpclient)])
    outputs = result.get_response()
    names = [o.name for o in outputs.outputs] if protocol == "grpc" else [o["name"] for o in outputs["outputs"]]
    return {name: result.as_numpy(name) for name in names}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bert_ensemble_matches_onnxruntime_when_queried(server: Ports, bert_model: ServedModel, protocol: str) -> None:
    outputs = _infer(server, protocol, ensemble_model(bert_model.name, "fp32"), [t.encode() for t in TEXTS])
    assert outputs[SENTENCE_EMBEDDING].shape == (len(TEXTS), _width(bert_model, SENTENCE_EMBEDDING))
    assert not outputs[TRUNCATED].any()
    for row, text in enumerate(TEXTS):
        expected = _reference(bert_model, text)
        np.testing.assert_allclose(outputs[SENTENCE_EMBEDDING][row], expected[SENTENCE_EMBEDDING], atol=1e-4)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_gpt2_ensemble_matches_onnxruntime_when_queried(server: Ports, gpt2_model: ServedModel, protocol: str) -> None:
    outputs = _infer(server, protocol, ensemble_model(gpt2_model.name, "fp32"), [t.encode() for t in TEXTS])
    assert outputs[NEXT_TOKEN_LOGITS].shape == (len(TEXTS), _width(gpt2_model, NEXT_TOKEN_LOGITS))
    for row, text in enumerate(TEXTS):
        expected = _reference(gpt2_model, text)
        np.testing.assert_allclose(outputs[NEXT_TOKEN_LOGITS][row], expected[NEXT_TOKEN_LOGITS], atol=1e-4)
        assert outputs[NEXT_TOKEN_ID][row, 0] == expected[NEXT_TOKEN_ID][0]


def test_tokenizer_pads_gpt2_with_zero_and_mask_zero_when_rows_differ(server: Ports, gpt2_model: ServedModel) -> None:
    outputs = _infer(server, "grpc", tokenizer_model(gpt2_model.name), [b"triton", b"the quick brown fox jumps"])
    ids, mask = outputs["input_ids"], outputs["attention_mask"]
    short = int(mask[0].sum())
    assert short < ids.shape[1] and (ids[0, short:] == 0).all() and (mask[0, short:] == 0).all()
    assert mask[1].all()


@pytest.mark.parametrize(("texts", "width"), [([b"hello world"], 8), ([b"hello world", b"the quick brown fox jumps over the lazy dog"], 16)])
def test_tokenizer_pads_to_smallest_bucket_when_buckets_are_set(
    server: Ports, bert_model: ServedModel, texts: list[bytes], width: int
) -> None:
    outputs = _infer(server, "grpc", tokenizer_model(bert_model.name), texts)
    assert outputs["input_ids"].shape == (len(texts), width)
    assert outputs["attention_mask"].sum(axis=1).max() < width  # padding really happened
    assert (outputs["input_ids"][outputs["attention_mask"] == 0] == 0).all()  # BERT's [PAD] id


def test_tokenizer_pads_to_min_seq_len_when_text_is_shorter(server: Ports, gpt2_model: ServedModel) -> None:
    outputs = _infer(server, "grpc", tokenizer_model(gpt2_model.name), [b"a"])
    assert outputs["input_ids"].shape == (1, gpt2_model.min_seq_len)
    assert outputs["attention_mask"][0].tolist() == [1] + [0] * (gpt2_model.min_seq_len - 1)


@pytest.mark.parametrize(
    "texts",
    [
        ["Water boils at 100 DEGREES Celsius!", "Tabs\tand\nnew lines,\r\nand (brackets) -- e.g. 3.14?"],
        ["Caf\u00e9 na\u00efve \u6771\u4eac", "PLAIN ascii Row"],  # one non-ASCII row: the whole request takes the full path
        ["control\x07char", "Hello World"],
    ],
)
def test_bert_tokenizer_ids_equal_full_normalizer_when_ascii_fast_path_or_not(
    server: Ports, bert_model: ServedModel, texts: list[str]
) -> None:
    _assert_served_ids_equal_full_tokenizer(server, bert_model, texts)


def test_bert_tokenizer_ids_equal_full_normalizer_when_corpus(server: Ports, bert_model: ServedModel) -> None:
    corpus = read_corpus()
    rows = bert_model.max_batch_size
    for start in range(0, 64, rows):
        _assert_served_ids_equal_full_tokenizer(server, bert_model, corpus[start : start + rows])


def _assert_served_ids_equal_full_tokenizer(server: Ports, bert_model: ServedModel, texts: list[str]) -> None:
    """The served tokenizer (BertNormalizer skipped on plain ASCII) against the tokenizer as shipped."""
    outputs = _infer(server, "grpc", tokenizer_model(bert_model.name), [t.encode() for t in texts])
    for row, encoding in enumerate(_shipped_tokenizer(bert_model).encode_batch(texts)):
        length = int(outputs["attention_mask"][row].sum())
        assert outputs["input_ids"][row, :length].tolist() == encoding.ids, texts[row]


def test_ensemble_flags_truncation_when_text_exceeds_max_seq_len(server: Ports, bert_model: ServedModel) -> None:
    long_text = " ".join(["word"] * (3 * bert_model.max_seq_len))
    outputs = _infer(server, "grpc", ensemble_model(bert_model.name, "fp32"), [long_text.encode(), b"short"])
    assert outputs[TRUNCATED][:, 0].tolist() == [True, False]
    assert set(outputs) == {SENTENCE_EMBEDDING, TRUNCATED}  # per-token states stay with the engine model


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (lambda: [_text_input([b""])], "empty"),
        (lambda: [_text_input([b"ok", b"caf\xe9 \xff"])], "UTF-8"),
        (lambda: [_text_input([b"x"] * 9)], "batch"),
        (lambda: [grpcclient.InferInput("TEXTS", [1, 1], "BYTES")], "TEXTS"),
        (lambda: [grpcclient.InferInput(TEXT, [1, 1], "INT64")], "INT64"),
    ],
    ids=["empty-string", "non-utf8", "batch-over-max", "wrong-name", "wrong-type"],
)
def test_ensemble_answers_error_and_keeps_serving_when_input_is_bad(
    server: Ports, bert_model: ServedModel, inputs: object, message: str
) -> None:
    name = ensemble_model(bert_model.name, "fp32")
    tensors = inputs()  # type: ignore[operator]
    for tensor in tensors:
        if tensor.name() == "TEXTS":
            tensor.set_data_from_numpy(np.array([[b"x"]], dtype=object))
        elif tensor.datatype() == "INT64":
            tensor.set_data_from_numpy(np.array([[1]], dtype=np.int64))
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}") as client:
        with pytest.raises(InferenceServerException, match=message):
            client.infer(name, tensors)
        assert client.is_server_live() and client.is_model_ready(name)
    assert _infer(server, "grpc", name, [b"still serving"])[SENTENCE_EMBEDDING].shape == (1, _width(bert_model, SENTENCE_EMBEDDING))


def test_server_batches_requests_when_many_clients_query_concurrently(server: Ports, bert_model: ServedModel) -> None:
    name, engine = ensemble_model(bert_model.name, "fp32"), engine_model(bert_model.name, "fp32")
    expected = _reference(bert_model, "concurrent clients share batches")[SENTENCE_EMBEDDING]

    def client_loop(_: int) -> int:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}") as client:
            for _ in range(20):
                result = client.infer(name, [_text_input([b"concurrent clients share batches"])], client_timeout=30)
                np.testing.assert_allclose(result.as_numpy(SENTENCE_EMBEDDING)[0], expected, atol=1e-4)
        return 20

    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}") as client:
        before = client.get_inference_statistics(engine, as_json=True)["model_stats"][0]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(client_loop, range(16))) == 320
    assert time.monotonic() - started < 120
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}") as client:
        after = client.get_inference_statistics(engine, as_json=True)["model_stats"][0]
    inferences = int(after["inference_count"]) - int(before.get("inference_count", 0))
    executions = int(after["execution_count"]) - int(before.get("execution_count", 0))
    assert inferences == 320
    assert executions < inferences, f"no dynamic batching: {executions} executions for {inferences} inferences"
    assert max(int(stats["batch_size"]) for stats in after["batch_stats"]) > 1


def test_start_server_raises_with_log_tail_and_frees_ports_when_a_model_fails(tmp_path: Path, bert_model: ServedModel) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    engine = bert_model.engines[0]
    model = ServedModel(**{**vars(bert_model), "engines": [EngineArtifact(engine.precision, engine.runtime, broken, engine.outputs)]})
    write_model_repository(tmp_path / "repository", model)
    ports = free_ports()
    repository, state_dir = tmp_path / "repository", tmp_path / "server"
    with (
        pytest.raises(ServerError, match=f"failed to load '{engine_model(model.name, 'fp32')}'") as caught,
        running_server(repository, ports, state_dir=state_dir, timeout=120),
    ):
        pass
    assert not any(port_in_use(port) for port in ports.as_list())
    heading, _, tail = str(caught.value).partition(" log lines of ")
    log_path, _, tail = tail.partition(":\n")
    assert heading.endswith(f"last {LOG_TAIL_LINES}") and Path(log_path).parent == state_dir
    lines = tail.splitlines()
    assert 0 < len(lines) <= LOG_TAIL_LINES and lines == Path(log_path).read_text(errors="replace").splitlines()[-len(lines):]
    assert any(engine_model(model.name, "fp32") in line for line in lines), "the tail should show the model that failed"


def test_cli_starts_reports_and_stops_server_when_run_by_hand(tmp_path: Path, gpt2_model: ServedModel) -> None:
    write_model_repository(tmp_path / "repository", gpt2_model)
    ports = free_ports()
    flags = ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics),
             "--state-dir", str(tmp_path / "server")]  # fmt: skip
    runner = CliRunner()
    started = runner.invoke(cli, ["start", "--repository", str(tmp_path / "repository"), "--timeout", "120", *flags])
    try:
        assert started.exit_code == 0, started.output
        assert runner.invoke(cli, ["status", *flags]).exit_code == 0
    finally:
        stopped = runner.invoke(cli, ["stop", *flags])
    assert stopped.exit_code == 0, stopped.output
    assert runner.invoke(cli, ["status", *flags]).exit_code == 1
    assert not any(port_in_use(port) for port in ports.as_list())


def _ready_then_exit(ports: Ports, status: int) -> list[str]:
    """A command that exits with ``status`` if the server on ``ports`` answers ready, else 1."""
    probe = f"import sys, urllib.request; ok = urllib.request.urlopen('http://127.0.0.1:{ports.http}/v2/health/ready').status == 200"
    return [sys.executable, "-c", f"{probe}; sys.exit({status} if ok else 1)"]


def _port_flags(ports: Ports, state_dir: Path) -> list[str]:
    return ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics), "--state-dir", str(state_dir)]


def test_run_starts_a_server_for_the_command_and_stops_it_when_none_is_ready(tmp_path: Path, gpt2_model: ServedModel) -> None:
    write_model_repository(tmp_path / "repository", gpt2_model)
    ports = free_ports()
    flags = ["--repository", str(tmp_path / "repository"), *_port_flags(ports, tmp_path / "server")]
    result = CliRunner().invoke(cli, ["run", *flags, "--", *_ready_then_exit(ports, 7)])
    assert result.exit_code == 7, result.output  # the command ran against a ready server, and its status came back
    first = result.output.splitlines()[0]
    assert first.startswith(f"no Triton server is ready on 127.0.0.1 (http :{ports.http}, grpc :{ports.grpc}): starting one on")
    assert not any(port_in_use(port) for port in ports.as_list())


def test_run_uses_the_ready_server_and_leaves_it_running_when_one_answers(server: Ports, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--repository", str(tmp_path / "absent"), *_port_flags(server, tmp_path / "state"), "--",
                                      *_ready_then_exit(server, 0)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"using the Triton server already ready on 127.0.0.1 (http :{server.http}, grpc :{server.grpc})"]
    assert is_ready(server)


def test_docker_command_mounts_repository_and_publishes_ports_on_loopback_when_rendered(tmp_path: Path) -> None:
    command = docker_command(tmp_path, Ports(9000, 9001, 9002), gpus="device=0")
    assert command[:4] == ["docker", "run", "--rm", "--gpus=device=0"]
    assert {"-p127.0.0.1:9000:9000", "-p127.0.0.1:9001:9001", "-p127.0.0.1:9002:9002"} <= set(command)
    assert f"{tmp_path.resolve()}:/models:ro" in command
    assert "nvcr.io/nvidia/tritonserver:24.10-py3" in command
    assert command[-1].endswith("tritonserver --model-repository=/models --http-port=9000 --grpc-port=9001 "
                                "--metrics-port=9002 --log-verbose=0")  # fmt: skip
    assert "pip install --quiet tokenizers==" in command[-1]


def test_docker_command_passes_url_and_credential_names_but_no_secret_when_repository_is_s3() -> None:
    key = "k" * 32
    options = ServerOptions(listen="0.0.0.0", admin_key=key, model_control="poll", poll_secs=30)
    command = docker_command("s3://minio.example:9000/models/r", Ports(9000, 9001, 9002), options=options)
    assert not any(part.startswith("-v") for part in command)
    assert {"-eAWS_ACCESS_KEY_ID", "-eAWS_SECRET_ACCESS_KEY", "-eAWS_DEFAULT_REGION", "-eTRITON_ADMIN_KEY", "-p0.0.0.0:9000:9000"} <= set(command)
    assert "--model-repository=s3://minio.example:9000/models/r" in command[-1]
    assert "--model-control-mode=poll --repository-poll-secs=30" in command[-1]
    assert '--http-restricted-api=model-repository,shared-memory,trace,logging:admin-key="${TRITON_ADMIN_KEY}"' in command[-1]
    assert key not in " ".join(command)


def test_server_listens_on_loopback_only_when_started_by_default(server: Ports) -> None:
    for port in server.as_list():
        assert listening_addresses(port) == {"127.0.0.1"}, f"port {port}"


def test_server_environment_turns_tokenizer_parallelism_on_when_the_client_turned_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.delenv("BACKEND_PYTHON", raising=False)
    environment = server_environment()
    assert environment["TOKENIZERS_PARALLELISM"] == "true"
    assert environment["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_engine_model_returns_only_requested_outputs_when_client_names_them(server: Ports, bert_model: ServedModel) -> None:
    """What an ensemble step maps on is all the engine hands back (GPT-2's full logits would be hundreds of MB)."""
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    inputs = []
    for name, value in (("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", np.zeros_like(ids))):
        tensor = grpcclient.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}") as client:
        engine = engine_model(bert_model.name, "fp32")
        only = client.infer(engine, inputs, outputs=[grpcclient.InferRequestedOutput(SENTENCE_EMBEDDING)]).get_response()
        every = client.infer(engine, inputs).get_response()
    assert [o.name for o in only.outputs] == [SENTENCE_EMBEDDING]
    assert {o.name for o in every.outputs} == {LAST_HIDDEN_STATE, "pooler_output", SENTENCE_EMBEDDING}
