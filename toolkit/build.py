"""The build: model -> verified FP32 ONNX -> precision variants -> engines -> Triton repository.

Everything is built aside in ``build/<name>/`` and swapped into the repository only when every step
succeeded, so a failed build leaves the previous repository untouched. Re-running with the same inputs
finds the same fingerprint in the manifest and does nothing.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolkit.artifacts import EngineArtifact, ServedModel
from toolkit.environment import code_version, gpu_name, package_versions
from toolkit.errors import BadInputError
from toolkit.models.loading import LoadedModel
from toolkit.names import (
    Precision,
    Runtime,
    tokenizer_model,
)
from toolkit.precision import DEFAULT_KEEP_FP32
from toolkit.repository.configs import ServingOptions
from toolkit.repository.install import MANIFEST, install_into_repository, recover_interrupted_installs

# Bytes on disk per parameter for fp32 + fp16 + hybrid graphs, staged and installed (4 + 2 + 2, twice).
DISK_BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class BuildRequest:
    """Everything that decides a build's output; its hash is the build's fingerprint."""

    model: str
    name: str | None = None
    precisions: tuple[Precision, ...] = tuple(Precision)
    random_weights: bool = False
    keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32
    max_batch: int = 32
    opt_batch: int = 1
    min_seq: int = 32
    opt_seq: int = 128
    max_seq: int = 512
    fuse: bool = False
    outlier: float = 0.0
    config_overrides: dict[str, Any] = field(default_factory=dict)
    serving: ServingOptions = field(default_factory=ServingOptions)  # its ``gpu`` places engines on GPUs

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise BadInputError(f"--max-batch must be >= 1, got {self.max_batch}")
        if not 1 <= self.min_seq <= self.opt_seq <= self.max_seq:
            raise BadInputError(
                f"sequence lengths need 1 <= min <= opt <= max, got {self.min_seq}/{self.opt_seq}/{self.max_seq}: fix --min-seq/--opt-seq/--max-seq"
            )
        if not 1 <= self.opt_batch <= self.max_batch:
            raise BadInputError(f"--opt-batch must lie in 1..{self.max_batch}, got {self.opt_batch}")
        if not self.precisions:
            raise BadInputError("no precision given: pass --precisions fp32,fp16,hybrid (or a subset)")


def parse_precisions(value: str | Iterable[str]) -> tuple[Precision, ...]:
    """``"fp32,hybrid"`` -> (Precision.FP32, Precision.HYBRID); unknown names fail with the valid ones."""
    items = [item.strip().lower() for item in (value.split(",") if isinstance(value, str) else value) if item.strip()]
    valid = [precision.value for precision in Precision]
    unknown = [item for item in items if item not in valid]
    if unknown:
        raise BadInputError(f"unknown precision {', '.join(repr(item) for item in unknown)}: choose from {','.join(valid)} (--precisions)")
    return tuple(dict.fromkeys(Precision(item) for item in items))


def fingerprint(request: BuildRequest) -> str:
    """Hash of the request, the toolkit's build code and the package versions."""
    digest = hashlib.sha256(json.dumps(asdict(request), sort_keys=True, default=str).encode())
    for module in sorted(Path(__file__).parent.rglob("*.py")):
        if "backends" not in module.parts:
            digest.update(module.read_bytes())
    digest.update(json.dumps(package_versions(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def existing_manifest(repository: Path, name: str) -> dict[str, Any] | None:
    """The manifest of ``name`` in ``repository``, if a build put one there."""
    path = repository / tokenizer_model(name) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def build_model(
    request: BuildRequest,
    repository: Path,
    work_dir: Path = Path("build"),
    runtimes: tuple[Runtime, ...] = (Runtime.ONNXRUNTIME, Runtime.TENSORRT),
    log: Callable[[str], None] = print,
) -> ServedModel | None:
    """Build ``request`` into ``repository``; returns the served model, or None when already up to date."""
    from tqdm import tqdm

    from toolkit.models.loading import load_model, short_name
    from toolkit.models.stress import add_outlier_channel

    name = request.name or short_name(request.model)
    build_fingerprint = fingerprint(request)
    for line in recover_interrupted_installs(repository):  # before reading the manifest it may restore
        log(line)
    previous = existing_manifest(repository, name)
    if previous and previous.get("fingerprint") == build_fingerprint:
        log(f"{name}: up to date in {repository} (fingerprint {build_fingerprint})")
        return None

    model = load_model(request.model, request.random_weights, name, request.config_overrides)
    if request.outlier:
        add_outlier_channel(model, request.outlier)
    if request.max_seq > model.max_positions:
        raise BadInputError(
            f"--max-seq {request.max_seq} exceeds {name}'s {model.max_positions} positions: pass --max-seq <= {model.max_positions}"
        )
    parameters = sum(p.numel() for p in model.module.parameters())
    _check_disk(repository, work_dir, parameters)
    with tqdm(total=2 + 2 * len(request.precisions), desc=f"build {name}", unit="step", leave=False) as steps:

        def log_above_bar(message: str) -> None:
            with steps.external_write_mode():
                log(message)

        return _build_loaded(request, model, build_fingerprint, parameters, repository, work_dir, runtimes, steps, log_above_bar)


def _build_loaded(
    request: BuildRequest,
    model: LoadedModel,
    build_fingerprint: str,
    parameters: int,
    repository: Path,
    work_dir: Path,
    runtimes: tuple[Runtime, ...],
    steps: Any,
    log: Callable[[str], None],
) -> ServedModel:
    """The steps after loading: export, variants, engines, repository swap."""
    from toolkit.engines import onnxrt, tensorrt
    from toolkit.models.export import onnx_from_hf, output_specs, verify_export

    name = model.name
    stage = work_dir / name
    shutil.rmtree(stage, ignore_errors=True)
    fp32_path = onnx_from_hf(model, stage / "export" / "fp32.onnx")
    checks = verify_export(model, fp32_path)
    log(
        f"{name}: export matches PyTorch at {len({(c.batch, c.seq) for c in checks})} shapes (worst cosine {min(c.cosine_min for c in checks):.7f}, max abs {max(c.max_abs_error for c in checks):.2e})"
    )
    steps.update()

    import onnx

    from toolkit.precision import fused_variant_from_fp32, precision_census, save_onnx, variant_from_fp32

    exported = onnx.load(str(fp32_path))
    engines: list[EngineArtifact] = []
    variants: dict[str, Any] = {}
    profile = tensorrt.ShapeProfile(1, request.opt_batch, request.max_batch, request.min_seq, request.opt_seq, request.max_seq)
    trt_ok = Runtime.TENSORRT in runtimes and tensorrt.is_tensorrt_available()
    if Runtime.TENSORRT in runtimes and not trt_ok:
        log(f"{name}: TensorRT is not installed: building ONNX Runtime engines only ({tensorrt.INSTALL_HINT})")
    outputs = output_specs(model)
    fused = _fused_fp32(model, fp32_path, stage, log) if request.fuse else None
    for precision in request.precisions:
        graph = variant_from_fp32(exported, precision, request.keep_fp32)
        raw = save_onnx(graph, stage / "variants" / f"{precision.value}.raw.onnx")
        if fused is None:
            shipped, optimisation = onnxrt.optimized_onnx(raw, stage / "variants" / f"{precision.value}.onnx")
            census = precision_census(graph)
        else:
            # ONNX Runtime gets the fused graph; TensorRT keeps the standard-op graph (raw) it can parse.
            fused_graph = fused_variant_from_fp32(fused, precision, request.keep_fp32)
            shipped = save_onnx(fused_graph, stage / "variants" / f"{precision.value}.fused.onnx")
            optimisation, census = "ONNX Runtime transformer fusions (GPU)", precision_census(fused_graph)
        steps.update()
        engines.append(EngineArtifact(precision, Runtime.ONNXRUNTIME, shipped, outputs))
        record: dict[str, Any] = {
            "onnx": {"file": shipped.name, "sha256": sha256_of(shipped), "bytes": shipped.stat().st_size, "optimisation": optimisation},
            "node_precisions": census,
        }
        if trt_ok:
            plan = tensorrt.plan_from_onnx(
                raw, stage / "plans" / f"{precision.value}.plan", profile, work_dir / "timing.cache", allow_tf32=False
            )
            engines.append(EngineArtifact(precision, Runtime.TENSORRT, plan, outputs))
            record["tensorrt"] = {"file": plan.name, "sha256": sha256_of(plan), "bytes": plan.stat().st_size}
        variants[precision.value] = record
        steps.update()

    tokenizer_dir = stage / "tokenizer"
    model.tokenizer.save_pretrained(str(tokenizer_dir))
    manifest = {
        "name": name,
        "fingerprint": build_fingerprint,
        "request": asdict(request),
        "family": model.family.value,
        "source": model.provenance,
        "parameters": parameters,
        "packages": package_versions(),
        "code": code_version(),
        "policy": {"hybrid_keep_fp32": list(request.keep_fp32), "fp16_io": "fp32"},
        "shapes": {
            "max_batch": request.max_batch,
            "sequence": [request.min_seq, request.opt_seq, request.max_seq],
            "tensorrt_profile": asdict(profile),
        },
        "export_checks": [asdict(check) for check in checks],
        "variants": variants,
        "host": {"machine": platform.node(), "python": platform.python_version(), "gpu": gpu_name()},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    served = ServedModel(
        name=name,
        family=model.family,
        tokenizer_dir=tokenizer_dir,
        max_batch_size=request.max_batch,
        max_seq_len=request.max_seq,
        min_seq_len=request.min_seq,
        hidden_size=model.hidden_size,
        vocab_size=model.vocab_size,
        engines=engines,
        manifest=manifest,
    )
    install_into_repository(served, repository, stage / "repository", request.serving)
    steps.update()
    log(f"{name}: wrote {len(engines)} engines ({', '.join(p.value for p in request.precisions)}) into {repository}")
    return served


def _fused_fp32(model: LoadedModel, fp32_path: Path, stage: Path, log: Callable[[str], None]) -> Any:
    """Fuse the FP32 export for ONNX Runtime's GPU kernels and check it still matches the export."""
    import onnx

    from toolkit.engines.onnxrt import fused_onnx, run_onnx
    from toolkit.errors import ExportMismatchError
    from toolkit.measurement.compare import cosine_rows
    from toolkit.models.export import example_inputs, output_specs

    heads = int(getattr(model.config, "num_attention_heads", None) or model.config.n_head)
    path, stats = fused_onnx(fp32_path, stage / "export" / "fused.onnx", model.family.value, heads, model.hidden_size)
    inputs = example_inputs(model, 3, 40)
    valid = inputs["attention_mask"].astype(bool)
    name = output_specs(model)[0].name
    expected, got = run_onnx(fp32_path, inputs)[name], run_onnx(path, inputs)[name]
    cosine = float(cosine_rows(expected[valid], got[valid]).min())
    if not cosine >= 0.99999:
        raise ExportMismatchError(f"fused graph of {model.name} disagrees with the export: cosine {cosine:.6f}")
    log(f"{model.name}: fused {stats} (cosine vs export {cosine:.7f})")
    return onnx.load(str(path))


def _check_disk(repository: Path, work_dir: Path, parameters: int) -> None:
    needed = parameters * DISK_BYTES_PER_PARAMETER
    for folder in {repository.resolve().parent, work_dir.resolve().parent}:
        free = shutil.disk_usage(folder).free
        if free < needed:
            raise BadInputError(f"not enough disk space in {folder}: {free / 1e9:.1f} GB free, the build needs about {needed / 1e9:.1f} GB")
