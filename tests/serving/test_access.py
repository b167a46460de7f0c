"""Who can reach the server: loopback by default, exposed only on request and then behind the admin key;
explicit model control (what Triton Model Analyzer's remote mode needs)."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from click.testing import CliRunner
from listening import listening_addresses
from tritonclient.utils import InferenceServerException

from toolkit.artifacts import ServedModel
from toolkit.errors import BadInputError
from toolkit.names import SENTENCE_EMBEDDING, TEXT
from toolkit.repository.layout import write_model_repository
from toolkit.repository.naming import engine_model, ensemble_model, tokenizer_model
from toolkit.serving import ServerHandle, ServerOptions, admin_key_from_environment, running_server, server_command
from toolkit.serving.cli import main as cli
from toolkit.serving.server import ADMIN_KEY_HEADER, ADMIN_KEY_VARIABLE, GRPC_ADMIN_KEY_HEADER, Ports

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]

KEY = secrets.token_urlsafe(32)


def _embedding_width(model: ServedModel) -> int:
    return next(spec.dims[-1] for spec in model.engines[0].outputs if spec.name == SENTENCE_EMBEDDING)


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory, bert_model: ServedModel) -> Iterator[ServerHandle]:
    """Listening on every interface, restricted by the key from the environment, explicit model control with
    only the FP32 engine loaded at start."""
    root = tmp_path_factory.mktemp("exposed")
    write_model_repository(root / "repository", bert_model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ADMIN_KEY_VARIABLE, KEY)
        options = ServerOptions(
            listen="0.0.0.0",
            admin_key=admin_key_from_environment(),
            model_control="explicit",
            load_models=(engine_model(bert_model.name, "fp32"),),
        )
        with running_server(root / "repository", state_dir=root / "server", options=options, timeout=180) as handle:
            yield handle


def _repository_index_over_http(ports: Ports, headers: dict[str, str]) -> tuple[int, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{ports.http}/v2/repository/index", data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _ready_models(handle: ServerHandle) -> set[str]:
    with grpcclient.InferenceServerClient(f"127.0.0.1:{handle.ports.grpc}") as client:
        index = client.get_model_repository_index(headers={GRPC_ADMIN_KEY_HEADER: KEY}, as_json=True)
    return {model["name"] for model in index["models"] if model.get("state") == "READY"}


def test_server_options_refuse_to_expose_when_admin_key_is_missing() -> None:
    with pytest.raises(BadInputError, match=rf"--listen 0\.0\.0\.0 .*\${ADMIN_KEY_VARIABLE}.*--no-restrict"):
        ServerOptions(listen="0.0.0.0")
    assert ServerOptions(listen="0.0.0.0", restrict=False).control_arguments() == []


def test_server_options_never_show_the_key_when_it_is_rejected_or_printed() -> None:
    short = "secret-but-short"[:12]
    with pytest.raises(BadInputError, match="has 12 characters") as error:
        ServerOptions(listen="0.0.0.0", admin_key=short)
    assert short not in str(error.value)
    assert KEY not in repr(ServerOptions(listen="0.0.0.0", admin_key=KEY))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(listen="localhost"), "IPv4 address"),
        (dict(load_models=("a",)), "needs --model-control-mode explicit"),
        (dict(model_control="explicit", load_models=("*", "a")), "must be the only --load-model"),
        (dict(model_control="poll", poll_secs=0), "1 or more"),
    ],
)
def test_server_options_raise_with_fix_when_settings_conflict(options: dict[str, object], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        ServerOptions(**options)  # type: ignore[arg-type]


def test_server_command_binds_every_endpoint_to_loopback_and_leaves_apis_open_when_defaults(tmp_path: Path) -> None:
    command = server_command(tmp_path, tmp_path, Ports(1, 2, 3))
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(command)
    assert not any("restricted" in part or "model-control" in part for part in command)


def test_cli_start_refuses_to_expose_when_admin_key_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_KEY_VARIABLE, raising=False)
    result = CliRunner().invoke(cli, ["start", "--repository", str(tmp_path), "--listen", "0.0.0.0", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert ADMIN_KEY_VARIABLE in result.output and "--no-restrict" in result.output
    assert not (tmp_path / "s" / "tritonserver.pid").exists()


def test_exposed_server_listens_on_every_interface_when_listen_is_0_0_0_0(exposed: ServerHandle) -> None:
    for port in exposed.ports.as_list():
        assert listening_addresses(port) & {"0.0.0.0", "::"}, f"port {port}: {listening_addresses(port)}"


@pytest.mark.parametrize("key", [None, "wrong-" + KEY], ids=["no-key", "wrong-key"])
def test_repository_api_refuses_request_when_admin_key_is_missing_or_wrong(exposed: ServerHandle, key: str | None) -> None:
    status, body = _repository_index_over_http(exposed.ports, {ADMIN_KEY_HEADER: key} if key else {})
    assert status == 403 and ADMIN_KEY_HEADER in str(body)
    grpc_headers = {GRPC_ADMIN_KEY_HEADER: key} if key else {}
    with grpcclient.InferenceServerClient(f"127.0.0.1:{exposed.ports.grpc}") as client:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index(headers=grpc_headers)
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model(engine_model("tinybert", "fp32"), headers=grpc_headers)


def test_repository_api_answers_when_admin_key_is_sent(exposed: ServerHandle) -> None:
    status, body = _repository_index_over_http(exposed.ports, {ADMIN_KEY_HEADER: KEY})
    assert status == 200 and isinstance(body, list)


def test_inference_health_and_status_stay_open_when_server_is_exposed(exposed: ServerHandle, bert_model: ServedModel) -> None:
    ids = np.array([[101, 7592, 102]], dtype=np.int64)
    inputs = []
    for name, value in (("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", np.zeros_like(ids))):
        tensor = grpcclient.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    with grpcclient.InferenceServerClient(f"127.0.0.1:{exposed.ports.grpc}") as client:
        assert client.is_server_ready()
        result = client.infer(engine_model(bert_model.name, "fp32"), inputs)
    assert result.as_numpy(SENTENCE_EMBEDDING).shape == (1, _embedding_width(bert_model))
    flags = ["--http-port", str(exposed.ports.http), "--grpc-port", str(exposed.ports.grpc), "--state-dir", str(exposed.log_path.parent)]
    assert CliRunner().invoke(cli, ["status", *flags]).exit_code == 0


def test_admin_key_stays_out_of_server_log_when_exposed(exposed: ServerHandle) -> None:
    assert KEY not in exposed.log_path.read_text()


def test_explicit_mode_loads_only_named_model_when_started(exposed: ServerHandle, bert_model: ServedModel) -> None:
    assert _ready_models(exposed) == {engine_model(bert_model.name, "fp32")}


def test_repository_call_loads_ensemble_and_its_tokenizer_when_mode_is_explicit(exposed: ServerHandle, bert_model: ServedModel) -> None:
    ensemble = ensemble_model(bert_model.name, "fp32")
    text = grpcclient.InferInput(TEXT, [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"hello world"]], dtype=object))
    with grpcclient.InferenceServerClient(f"127.0.0.1:{exposed.ports.grpc}") as client:
        client.load_model(ensemble, headers={GRPC_ADMIN_KEY_HEADER: KEY})
        assert client.infer(ensemble, [text]).as_numpy(SENTENCE_EMBEDDING).shape == (1, _embedding_width(bert_model))
    assert {ensemble, tokenizer_model(bert_model.name)} <= _ready_models(exposed)
