"""CLI error paths: every bad input ends with one line on stderr and a non-zero exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client.cli import format_infer, main

ROOT = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_exits_nonzero_with_one_line_when_server_down(capsys: pytest.CaptureFixture[str], dead_port: int, protocol: str) -> None:
    url = f"127.0.0.1:{dead_port}"
    code, err = _run(capsys, "infer", "hello", "--models", "minilm", "--url", url, "--protocol", protocol,
                     "--retries", "1")  # fmt: skip
    assert code != 0
    line = _one_error_line(err)
    assert url in line and "make serve" in line


def test_fidelity_exits_nonzero_with_one_line_when_server_down(capsys: pytest.CaptureFixture[str], dead_port: int) -> None:
    code, err = _run(capsys, "fidelity", "--models", "minilm", "--url", f"127.0.0.1:{dead_port}", "--retries", "0")
    assert code != 0 and "make serve" in _one_error_line(err)


def test_infer_exits_nonzero_with_one_line_when_precision_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "infer", "hello", "--models", "minilm", "--precisions", "fp8")
    assert code == 2 and "fp8" in _one_error_line(err)


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [("--precisions", "fp16,int8", "int8"), ("--inputs", "random,images", "images"), ("--batch-sizes", "1,x", "x"),
     ("--seq-lens", "0", "positive")],
)  # fmt: skip
def test_fidelity_exits_nonzero_with_one_line_when_list_invalid(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, expected: str
) -> None:
    code, err = _run(capsys, "fidelity", "--models", "minilm", flag, value)
    assert code != 0 and expected in _one_error_line(err)


def test_infer_exits_nonzero_with_one_line_when_text_missing(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "infer", "--models", "minilm")
    assert code == 2 and "TEXTS" in _one_error_line(err)


def test_module_prints_help_and_exits_zero_when_asked() -> None:
    done = subprocess.run([sys.executable, "-m", "client", "--help"], cwd=ROOT, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0 and "fidelity" in done.stdout
    assert "tritonclient" not in done.stderr


def test_help_does_not_import_heavy_modules_when_run() -> None:
    code = (
        "import sys; from client.cli import main; main(['--help']); "
        "heavy = [m for m in ('tritonclient', 'onnxruntime', 'torch', 'tokenizers') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "HEAVY []" in done.stdout


def test_format_infer_shows_norm_when_embedding_and_token_when_gpt2() -> None:
    bert = {"sentence_embedding": np.array([[3.0, 4.0]]), "truncated": np.array([[True]])}
    assert "norm 5.0000" in format_infer(["hi"], bert) and "(truncated)" in format_infer(["hi"], bert)
    gpt2 = {"next_token_id": np.array([[42]]), "next_token_logits": np.zeros((1, 50))}
    assert "next token id 42 'x'" in format_infer(["hi"], gpt2, lambda ids: "x")
