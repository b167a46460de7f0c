"""The real tritonserver on a repository in S3 (moto's S3 server): pushed by ``python -m toolkit.repository``,
served from ``s3://127.0.0.1:PORT/bucket/path``, followed while polling, and refused with Triton's own error."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from click.testing import CliRunner
from moto_s3 import MotoS3, running_moto

from toolkit.errors import ServerError
from toolkit.names import SENTENCE_EMBEDDING, TEXT
from toolkit.repository.cli import main as repository_cli
from toolkit.repository.naming import engine_model, ensemble_model
from toolkit.repository.object_store import push_repository
from toolkit.serving import ServerHandle, ServerOptions, free_ports, running_server
from toolkit.serving.cli import main as serving_cli
from toolkit.serving.server import port_in_use

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [b"Triton reads its repository from object storage.", b"hello world"]
ENSEMBLE, ENGINE = ensemble_model("minilm", "fp32"), engine_model("minilm", "fp32")


@pytest.fixture(scope="module")
def minilm_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MiniLM (one layer, FP32, sequences up to 64) built by the real CLI."""
    folder = tmp_path_factory.mktemp("minilm_s3")
    build = [
        sys.executable, str(ROOT / "build_engines.py"), "--models", "minilm", "--layers", "1", "--precisions", "fp32",
        "--max-seq", "64", "--min-seq", "1", "--opt-seq", "32", "--max-batch", "4", "--runtimes", "onnxruntime", "--cpu",
        "--repository", str(folder / "repository"), "--work-dir", str(folder / "work"),
    ]  # fmt: skip
    done = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return folder / "repository"


def _embeddings(handle: ServerHandle) -> np.ndarray:
    text = grpcclient.InferInput(TEXT, [len(TEXTS), 1], "BYTES")
    text.set_data_from_numpy(np.array(TEXTS, dtype=object).reshape(-1, 1))
    with grpcclient.InferenceServerClient(f"{handle.host}:{handle.ports.grpc}") as client:
        return np.asarray(client.infer(ENSEMBLE, [text]).as_numpy(SENTENCE_EMBEDDING))


@pytest.fixture(scope="module")
def local_embeddings(minilm_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    with running_server(minilm_repository, state_dir=tmp_path_factory.mktemp("local") / "server") as handle:
        return _embeddings(handle)


@pytest.fixture(scope="module")
def pushed(s3: MotoS3, minilm_repository: Path) -> str:
    """The repository pushed with the CLI a user runs; returns its URL."""
    url = s3.url(s3.bucket("served"), "minilm")
    result = CliRunner().invoke(repository_cli, ["push", "--to", url, "--repository", str(minilm_repository)])
    assert result.exit_code == 0, result.output
    return url


@pytest.fixture(scope="module")
def s3_server(pushed: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """tritonserver on the bucket, polling it every second."""
    options = ServerOptions(model_control="poll", poll_secs=1)
    with running_server(pushed, state_dir=tmp_path_factory.mktemp("s3") / "server", options=options, timeout=180) as handle:
        yield handle


def _ready_versions(handle: ServerHandle, model: str) -> set[str]:
    with grpcclient.InferenceServerClient(f"{handle.host}:{handle.ports.grpc}") as client:
        index = client.get_model_repository_index(as_json=True)["models"]
    return {entry.get("version", "") for entry in index if entry["name"] == model and entry.get("state") == "READY"}


def test_server_on_s3_returns_local_embeddings_when_repository_is_pushed(s3_server: ServerHandle, local_embeddings: np.ndarray) -> None:
    np.testing.assert_allclose(_embeddings(s3_server), local_embeddings, rtol=0, atol=1e-6)
    assert _ready_versions(s3_server, ENGINE) == {"1"}


def test_polling_server_switches_to_pushed_version_and_keeps_answering_when_push_lands(
    s3_server: ServerHandle, pushed: str, minilm_repository: Path, local_embeddings: np.ndarray
) -> None:
    push_repository(minilm_repository, pushed, force=True, log=lambda _: None)
    deadline = time.monotonic() + 60
    answered = 0
    while _ready_versions(s3_server, ENGINE) != {"2"}:
        assert time.monotonic() < deadline, f"{ENGINE} versions ready: {_ready_versions(s3_server, ENGINE)}"
        np.testing.assert_allclose(_embeddings(s3_server), local_embeddings, rtol=0, atol=1e-6)  # served throughout
        answered += 1
    np.testing.assert_allclose(_embeddings(s3_server), local_embeddings, rtol=0, atol=1e-6)
    assert answered > 0


def test_cli_start_fails_with_tritons_error_on_first_line_when_bucket_is_missing(s3: MotoS3, tmp_path: Path) -> None:
    ports = free_ports()
    flags = ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics)]
    result = CliRunner().invoke(serving_cli, ["start", "--repository", s3.url("no-such-bucket", "r"), "--state-dir", str(tmp_path / "server"), *flags])
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert first.startswith("Error: tritonserver exited during startup: creating server: Internal - Unable to create S3 filesystem client")
    assert not any(port_in_use(port) for port in ports.as_list())


def test_start_server_fails_with_tritons_error_on_first_line_when_credentials_are_refused(
    minilm_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_moto() as store:  # a server of its own: turning IAM checks on in the shared one would refuse the polling server
        url = store.url(store.bucket("guarded"), "minilm")
        push_repository(minilm_repository, url, log=lambda _: None)
        with store.require_credentials() as allowed:
            for name, value in allowed.items():
                monkeypatch.setenv(name, value)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            with pytest.raises(ServerError) as refused, running_server(url, state_dir=tmp_path / "server", timeout=120):
                pass
    assert str(refused.value).splitlines()[0].startswith(
        "tritonserver exited during startup: creating server: Internal - Unable to create S3 filesystem client. Check account credentials."
    )
