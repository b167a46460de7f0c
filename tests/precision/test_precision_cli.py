"""``python -m toolkit.precision``: help, and bad input as one line with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.precision.cli import main
from toolkit.precision.costs import gpu_available


@pytest.mark.parametrize(("content", "message"), [(b"", "holds no text"), (b"\xff\xfe caf\xe9", "is not UTF-8")])
def test_cli_rejects_texts_file_with_its_name_when_empty_or_not_utf8(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = tmp_path / "mine.txt"
    texts.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--models", "gpt2", "--random-weights", "--texts", str(texts)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --texts") and str(texts) in error and message in error and "\n" not in error


def test_cli_shows_help_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    main(["search", "-h"])
    out = capsys.readouterr().out
    assert "--policy-out" in out and "--min-cosine" in out and "--texts" in out


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs ONNX Runtime's CUDAExecutionProvider (onnxruntime-gpu and an NVIDIA GPU)")
def test_gpu_latency_ms_times_a_graph_when_a_gpu_is_present(tiny_bert: object, tmp_path: Path) -> None:
    from precision_cases import make_case

    from toolkit.names import Precision
    from toolkit.precision.costs import gpu_latency_ms
    from toolkit.precision.policy import variant_from_fp32

    case = make_case(tiny_bert, tmp_path)  # type: ignore[arg-type]
    assert gpu_latency_ms(variant_from_fp32(case.graph, Precision.FP16), case.text.batches[0]) > 0
