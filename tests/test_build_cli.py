"""build_engines.py: a real build into a temporary repository, idempotence, and one-line errors on bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import fidelity_floors as floors
import pytest
from click.testing import CliRunner

from build_engines import main
from toolkit.build import BuildRequest, build_model, existing_manifest, fingerprint, parse_precisions
from toolkit.environment import package_versions
from toolkit.errors import BadInputError
from toolkit.names import Precision
from toolkit.repository.configs import ServingOptions
from toolkit.repository.naming import engine_model

TINY = [
    "--models",
    "minilm",
    "--layers",
    "1",
    "--name",
    "minilm-cli",
    "--max-seq",
    "64",
    "--min-seq",
    "1",
    "--opt-seq",
    "32",
]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--models", "/no/such/folder"], "does not exist"),
        (["--models", "minilm", "--precisions", "fp8"], "unknown precision 'fp8'"),
        (["--models", "minilm", "--max-batch", "0"], "--max-batch must be >= 1"),
        (["--models", "minilm", "--max-seq", "4096"], "exceeds minilm's 512 positions"),
        (["--models", "minilm", "--min-seq", "64", "--opt-seq", "32"], "sequence lengths need 1 <= min <= opt <= max"),
        (["--models", "minilm", "--runtimes", "tvm"], "unknown runtime"),
        (["--models", "minilm", "--keep-fp32", "Softmaxx"], "unknown ONNX op types"),
        (["--models", "no-such-org/no-such-model-xyz"], "cannot load model"),
        (["--models", "minilm", "--cpu", "--cuda-graphs"], "CUDA graphs only exist on the CUDA provider"),
        (["--models", "minilm", "--seq-buckets", "32,x"], "--seq-buckets '32,x': expected comma-separated positive integers"),
        (["--models", "minilm", "--gpu", "--seq-buckets", "128,64"], "need increasing lengths"),
    ],
)
def test_build_cli_fails_with_one_line_error_when_input_is_bad(args: list[str], expected: str, tmp_path: Path) -> None:
    code, output = _run(*args, "--repository", str(tmp_path / "repo"), "--work-dir", str(tmp_path / "work"))
    assert code == 2
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], output
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_build_cli_rejects_unsupported_architecture(tmp_path: Path) -> None:
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 64}))
    code, output = _run("--models", str(folder), "--repository", str(tmp_path / "repo"))
    assert code == 2 and "supported: bert, roberta, xlm-roberta, distilbert, mpnet, modernbert, gpt2" in output
    assert "one module under toolkit/models/families/" in output


def _request_of(manifest: dict[str, Any]) -> BuildRequest:
    """The BuildRequest a manifest records (JSON turned tuples into lists and enums into strings)."""
    recorded = manifest["request"]
    serving = {key: tuple(value) if isinstance(value, list) else value for key, value in recorded["serving"].items()}
    return BuildRequest(**{
        **recorded, "precisions": tuple(Precision(p) for p in recorded["precisions"]), "keep_fp32": tuple(recorded["keep_fp32"]),
        "runtimes": tuple(recorded["runtimes"]), "pooling": tuple(recorded["pooling"]) if recorded["pooling"] else None,
        "serving": ServingOptions(**serving),
    })  # fmt: skip


def _assert_manifest_describes_the_build(manifest: dict[str, Any], repository: Path) -> None:
    """Package versions as installed, the sha256 and size of each installed engine, a fingerprint of the recorded request."""
    assert manifest["packages"] == package_versions() and {"torch", "transformers", "onnx", "onnxruntime"} <= set(manifest["packages"])
    for precision, variant in manifest["variants"].items():
        installed = repository / engine_model(manifest["name"], precision) / "1" / "model.onnx"
        assert variant["onnxruntime"]["sha256"] == hashlib.sha256(installed.read_bytes()).hexdigest(), precision
        assert variant["onnxruntime"]["bytes"] == installed.stat().st_size
    request = _request_of(manifest)
    assert manifest["fingerprint"] == fingerprint(request)
    assert fingerprint(dataclasses.replace(request, serving=ServingOptions(max_queue_delay_us=5))) != manifest["fingerprint"]
    assert fingerprint(dataclasses.replace(request, max_batch=request.max_batch + 1)) != manifest["fingerprint"]


def test_build_writes_engines_manifest_and_is_idempotent(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    code, output = _run(*TINY, "--repository", str(repo), "--work-dir", str(tmp_path / "work"))
    assert code == 0, output
    names = sorted(p.name for p in repo.iterdir())
    for precision in ("fp32", "fp16", "hybrid"):
        assert f"minilm-cli_{precision}_onnx" in names and f"minilm-cli_{precision}" in names
        assert (repo / f"minilm-cli_{precision}_onnx" / "1" / "model.onnx").is_file()
    manifest = existing_manifest(repo, "minilm-cli")
    assert manifest is not None
    assert manifest["variants"]["hybrid"]["node_precisions"]["Softmax"] == {"fp32": 1}
    assert manifest["source"]["weights"].startswith("sha256:")
    assert manifest["export_checks"] and all(check["cosine_min"] >= floors.FP32_REORDERED for check in manifest["export_checks"])
    assert "TensorRT is not installed" in output
    _assert_manifest_describes_the_build(manifest, repo)
    before = (repo / "minilm-cli_fp32_onnx" / "1" / "model.onnx").stat().st_mtime_ns
    code, output = _run(*TINY, "--repository", str(repo), "--work-dir", str(tmp_path / "work"))
    assert code == 0 and "up to date" in output
    assert (repo / "minilm-cli_fp32_onnx" / "1" / "model.onnx").stat().st_mtime_ns == before


def test_a_short_max_seq_alone_lowers_the_default_profile_to_fit(tmp_path: Path) -> None:
    """--max-seq 64 with no --opt-seq builds (the optimal length defaults to 128, lowered to what is served), where it
    failed with "fix --min-seq/--opt-seq/--max-seq"; the engine config and manifest carry the profile used."""
    repo = tmp_path / "repo"
    args = ["--models", "minilm", "--layers", "1", "--name", "short", "--max-seq", "64", "--precisions", "fp32", "--runtimes", "onnxruntime"]
    code, output = _run(*args, "--repository", str(repo), "--work-dir", str(tmp_path / "work"))
    assert code == 0, output
    manifest = existing_manifest(repo, "short")
    assert manifest is not None and manifest["shapes"]["sequence"] == [32, 64, 64]
    code, output = _run(*args, "--max-seq", "16", "--repository", str(tmp_path / "other"), "--work-dir", str(tmp_path / "work"))
    assert code == 0, output
    assert existing_manifest(tmp_path / "other", "short")["shapes"]["sequence"] == [16, 16, 16]  # type: ignore[index]


def _contents(repository: Path) -> dict[str, str]:
    """Every file's sha256 and every folder, by path under ``repository``."""
    return {
        str(path.relative_to(repository)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        for path in sorted(repository.rglob("*"))
    }


# A build in a process of its own, killed (no clean-up) instead of its second rename of a new model into the repository.
KILLED_BUILD = """
import json, os, sys
from pathlib import Path
from toolkit.build import BuildRequest, build_model
from toolkit.names import Precision
from toolkit.repository.configs import ServingOptions

spec, repository, work_dir = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
real, moved_in = os.rename, []

def rename(source, target):
    if Path(target).parent == repository:
        moved_in.append(target)
        if len(moved_in) == 2:
            os._exit(137)
    real(source, target)

os.rename = rename
request = BuildRequest(**{**spec, "precisions": tuple(Precision(p) for p in spec["precisions"])})
build_model(request, repository, work_dir, log=lambda _: None)
"""


def test_failed_build_leaves_previous_repository_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    request = BuildRequest(
        model="minilm",
        name="minilm-keep",
        precisions=(Precision.FP32,),
        max_seq=64,
        min_seq=1,
        opt_seq=32,
        config_overrides={"num_hidden_layers": 1},
    )
    assert build_model(request, repo, tmp_path / "work", log=lambda _: None) is not None
    snapshot = _contents(repo)
    changed = BuildRequest(**{**request.__dict__, "precisions": (Precision.FP32, Precision.FP16)})

    # Killed while swapping the new models in: the next build call rolls that back before it reads the manifest.
    spec = {**{k: v for k, v in request.__dict__.items() if k not in ("serving", "precisions")}, "precisions": ["fp32", "fp16"]}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, json.dumps(spec), str(repo), str(tmp_path / "work")],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == 137, f"the build was not killed in its swap: {killed.stderr[-2000:]}"
    assert _contents(repo) != snapshot, "the kill should leave a half-swapped repository for the next build to repair"
    lines: list[str] = []
    assert build_model(request, repo, tmp_path / "work", log=lines.append) is None
    assert "rolled back" in lines[0] and "up to date" in lines[-1], lines
    assert _contents(repo) == snapshot

    def explode(*_: object, **__: object) -> None:
        raise BadInputError("simulated failure while writing")

    monkeypatch.setattr("toolkit.repository.layout.write_model_repository", explode)
    with pytest.raises(BadInputError, match="simulated"):
        build_model(changed, repo, tmp_path / "work", log=lambda _: None)
    assert _contents(repo) == snapshot
    shutil.rmtree(tmp_path / "work")


def test_build_cli_stops_with_one_line_and_writes_nothing_when_export_disagrees_with_pytorch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnx import load, numpy_helper, save

    from toolkit.models import export

    real = export.onnx_from_hf

    def broken_export(model: Any, path: Path) -> Path:
        """The real export with one square weight negated: what a wrong trace would give."""
        graph = load(str(real(model, path)))
        weight = next(init for init in graph.graph.initializer if len(init.dims) == 2 and init.dims[0] == init.dims[1])
        weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
        save(graph, str(path))
        return path

    monkeypatch.setattr("toolkit.build.onnx_from_hf", broken_export)
    code, output = _run(*TINY, "--precisions", "fp32", "--repository", str(tmp_path / "repo"), "--work-dir", str(tmp_path / "work"))
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "disagrees with PyTorch" in errors[0], output
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_parse_precisions_keeps_order_and_drops_duplicates() -> None:
    assert parse_precisions("hybrid,fp32,hybrid") == (Precision.HYBRID, Precision.FP32)


def test_build_serves_the_unfused_graph_and_says_why_when_the_fused_graph_fails_its_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ModernBERT's RotaryEmbedding fusion did with ONNX Runtime 1.31 on the H200: the fused graph cannot run."""
    from toolkit import build as build_module

    def broken(self: object, reference: Path, candidate: Path) -> float:
        raise RuntimeError("Non-zero status code returned while running RotaryEmbedding node\nsecond line")

    monkeypatch.setattr(build_module._Build, "_agreement", broken)
    lines: list[str] = []
    request = BuildRequest(model="minilm", name="unfused", layers=1, precisions=(Precision.FP16,), fuse=True, runtimes=("onnxruntime",),
                           serving=ServingOptions(gpu=False))  # fmt: skip
    build_model(request, tmp_path / "repo", tmp_path / "work", log=lines.append)
    said = [line for line in lines if "fused graph fails its check" in line]
    assert said and "RotaryEmbedding" in said[0] and "second line" not in said[0] and said[0].endswith("stays unfused")
    manifest = existing_manifest(tmp_path / "repo", "unfused")
    assert manifest is not None and manifest["fused_ops"] == {}
    assert "node_precisions_fused" not in manifest["variants"]["fp16"]


def test_fused_onnx_turns_off_the_fusions_a_family_names_and_refuses_unknown_ones(tmp_path: Path) -> None:
    from toolkit.models.families import FAMILIES
    from toolkit.runtimes.onnxruntime import fused_onnx

    assert FAMILIES["modernbert"].ort_fusions_off == ("enable_rotary_embeddings",)
    source = tmp_path / "none.onnx"
    with pytest.raises(ValueError, match="no enable_warp_drive"):
        fused_onnx(source, tmp_path / "out.onnx", "bert", 2, 32, fusions_off=("enable_warp_drive",))
