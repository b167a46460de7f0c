"""The build: model -> verified FP32 ONNX -> precision variants -> engines (every runtime) -> Triton repository.

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
from typing import TYPE_CHECKING, Any

from toolkit.artifacts import EngineArtifact, ServedModel, sha256_of
from toolkit.environment import code_version, gpu_name, package_versions
from toolkit.errors import BadInputError, ExportMismatchError
from toolkit.models.export import ShapeCheck, example_inputs, onnx_from_hf, output_specs, verify_export
from toolkit.models.loading import LoadedModel, load_model, short_name
from toolkit.models.stress import add_outlier_channel
from toolkit.names import DEFAULT_PRECISIONS, Precision
from toolkit.precision.policy import (
    DEFAULT_KEEP_FP32,
    counted_clamps,
    fused_variant_from_fp32,
    precision_census,
    save_onnx,
    variant_from_fp32,
)
from toolkit.repository.configs import ServingOptions
from toolkit.repository.install import install_into_repository, recover_interrupted_installs
from toolkit.repository.lookup import read_manifest
from toolkit.runtimes import RUNTIMES, BuildContext, EngineRuntime, ShapeProfile, VariantGraphs, get_runtime, runtime_names
from toolkit.runtimes.onnxruntime import fused_onnx, run_onnx

if TYPE_CHECKING:
    import onnx

    from toolkit.precision.policy_file import PrecisionPolicy

Log = Callable[[str], None]
# Bytes on disk per parameter for fp32 + fp16 + hybrid graphs, staged and installed (4 + 2 + 2, twice).
DISK_BYTES_PER_PARAMETER = 16
DEFAULT_MAX_SEQ = 512
DEFAULT_MIN_SEQ, DEFAULT_OPT_SEQ = 32, 128  # each lowered to what a model serves when that is less


@dataclass(frozen=True)
class BuildRequest:
    """Everything that decides a build's output; its hash is the build's fingerprint.

    ``max_seq`` None takes the model's own limit: a sentence-transformers ``max_seq_length``, else its
    positions, capped at 512. ``pooling`` / ``normalize`` None keep the checkpoint's own pooling.
    """

    model: str
    name: str | None = None
    precisions: tuple[Precision, ...] = DEFAULT_PRECISIONS
    random_weights: bool = False
    keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32
    max_batch: int = 32
    opt_batch: int = 1
    min_seq: int | None = None  # None: DEFAULT_MIN_SEQ, or the optimal length when that is shorter
    opt_seq: int | None = None  # None: DEFAULT_OPT_SEQ, or the longest served sequence when that is shorter
    max_seq: int | None = None
    fuse: bool = False
    outlier: float = 0.0
    layers: int | None = None
    pooling: tuple[str, ...] | None = None
    normalize: bool | None = None
    config_overrides: dict[str, Any] = field(default_factory=dict)
    runtimes: tuple[str, ...] = tuple(RUNTIMES)
    serving: ServingOptions = field(default_factory=ServingOptions)  # its ``gpu`` places engines on GPUs
    policy: str | None = None  # precision policy file of the ``auto`` variant (None: searched at build time)

    def __post_init__(self) -> None:
        for name in ("precisions", "keep_fp32", "runtimes", "pooling"):  # lists (a request read back from JSON) become tuples
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.max_batch < 1:
            raise BadInputError(f"--max-batch must be >= 1, got {self.max_batch}")
        given = [value for value in (self.min_seq, self.opt_seq, self.max_seq) if value is not None]
        if given and (given[0] < 1 or given != sorted(given)):
            raise BadInputError(
                f"sequence lengths need 1 <= min <= opt <= max, got {self.min_seq}/{self.opt_seq}/{self.max_seq}: fix --min-seq/--opt-seq/--max-seq"
            )
        if not 1 <= self.opt_batch <= self.max_batch:
            raise BadInputError(f"--opt-batch must lie in 1..{self.max_batch}, got {self.opt_batch}")
        if not self.precisions:
            raise BadInputError("no precision given: pass --precisions fp32,fp16,hybrid (or a subset)")
        for name in self.runtimes:
            get_runtime(name)  # an unknown runtime names the registered ones
        if self.policy and Precision.AUTO not in self.precisions:
            raise BadInputError(f"--policy {self.policy} sets the auto precision, which --precisions lacks: add auto (e.g. --precisions fp32,auto)")


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
    if request.policy and Path(request.policy).is_file():  # a policy edited in place is a new build
        digest.update(Path(request.policy).read_bytes())
    return digest.hexdigest()[:16]


def existing_manifest(repository: Path, name: str) -> dict[str, Any] | None:
    """The manifest of ``name`` in ``repository``, if a build put one there."""
    return read_manifest(repository, name)


def build_model(request: BuildRequest, repository: Path, work_dir: Path = Path("build"), log: Log = print) -> ServedModel | None:
    """Build ``request`` into ``repository``; returns the served model, or None when already up to date."""
    from tqdm import tqdm

    name = request.name or short_name(request.model)
    build_fingerprint = fingerprint(request)
    for line in recover_interrupted_installs(repository):  # before reading the manifest it may restore
        log(line)
    previous = existing_manifest(repository, name)
    if previous and previous.get("fingerprint") == build_fingerprint:
        log(f"{name}: up to date in {repository} (fingerprint {build_fingerprint})")
        return None
    model = _loaded(request, name)
    _check_vocabulary(model)
    max_seq = _max_seq(request, model)
    parameters = sum(p.numel() for p in model.module.parameters())
    _check_disk(repository, work_dir, parameters)
    with tqdm(total=2 + 2 * len(request.precisions), desc=f"build {name}", unit="step", leave=False) as steps:

        def log_above_bar(message: str) -> None:
            with steps.external_write_mode():
                log(message)

        build = _Build(request, model, max_seq, build_fingerprint, parameters, work_dir / name, work_dir, log_above_bar, steps.update)
        return build.run(repository)


def _loaded(request: BuildRequest, name: str) -> LoadedModel:
    model = load_model(
        request.model, request.random_weights, name, request.config_overrides, request.layers, request.pooling, request.normalize
    )
    if request.outlier:
        add_outlier_channel(model, request.outlier)
    return model


def model_from_manifest(manifest: dict[str, Any]) -> LoadedModel:
    """The PyTorch model a build exported, loaded again from its manifest's request (the same weights, or the same
    seeded random ones): what perf times as the PyTorch baseline."""
    request = manifest["request"]
    pooling = request.get("pooling")
    fields = {
        "model": request["model"],
        "random_weights": request.get("random_weights", False),
        "outlier": request.get("outlier", 0.0),
        "layers": request.get("layers"),
        "pooling": tuple(pooling) if pooling else None,
        "normalize": request.get("normalize"),
        "config_overrides": request.get("config_overrides") or {},
    }
    return _loaded(BuildRequest(**fields), manifest["name"])


def fused_graph(model: LoadedModel, source: Path, target: Path) -> tuple[Path, dict[str, int]] | None:
    """ONNX Runtime's fusions of ``model``'s family (its optimizer ``model_type``, then the family's own passes)
    on the export at ``source``, written to ``target``; None for a family ONNX Runtime has no fusions for."""
    family, config = model.family, model.config
    if family.ort_model_type is None:
        return None
    post = lambda graph: family.post_fusion(graph, config)  # noqa: E731
    return fused_onnx(
        source, target, family.ort_model_type, family.num_heads(config), family.hidden_size(config), post, family.ort_fusions_off
    )


def _check_vocabulary(model: LoadedModel) -> None:
    size = len(model.tokenizer)
    if size > model.vocab_size:
        raise BadInputError(
            f"the tokenizer of '{model.name}' has {size} entries but the model's embedding table only {model.vocab_size}: "
            "pass the tokenizer that belongs to this model (or a config with a larger vocab_size)"
        )


def _max_seq(request: BuildRequest, model: LoadedModel) -> int:
    """The longest sequence served: ``--max-seq``, else the model's own limit (see ``BuildRequest``)."""
    if request.max_seq is not None:
        if request.max_seq > model.max_positions:
            raise BadInputError(
                f"--max-seq {request.max_seq} exceeds {model.name}'s {model.max_positions} positions: pass --max-seq <= {model.max_positions}"
            )
        return request.max_seq
    st_limit = model.sentence_transformers.max_seq_length if model.sentence_transformers else None
    chosen = min(DEFAULT_MAX_SEQ, model.max_positions, st_limit or DEFAULT_MAX_SEQ)
    for flag, given in (("--opt-seq", request.opt_seq), ("--min-seq", request.min_seq)):
        if given is not None and chosen < given:
            raise BadInputError(f"{model.name} serves at most {chosen} tokens, below {flag} {given}: pass a smaller {flag}")
    return chosen


@dataclass
class _Build:
    """The steps after loading: export, precision variants, engines, manifest, repository swap."""

    request: BuildRequest
    model: LoadedModel
    max_seq: int
    fingerprint: str
    parameters: int
    stage: Path
    work_dir: Path
    log: Log
    step: Callable[[], object]
    clamps: dict[str, float | int] = field(default_factory=dict)
    auto_policy: dict[str, Any] | None = None  # the manifest's record of the auto variant's policy

    @property
    def opt_seq(self) -> int:
        if self.request.opt_seq is not None:
            return self.request.opt_seq
        return min(max(DEFAULT_OPT_SEQ, self.request.min_seq or 0), self.max_seq)

    @property
    def min_seq(self) -> int:
        return self.request.min_seq if self.request.min_seq is not None else min(DEFAULT_MIN_SEQ, self.opt_seq)

    def run(self, repository: Path) -> ServedModel:
        shutil.rmtree(self.stage, ignore_errors=True)
        fp32_path, checks = self.export()
        fused, fusion = self.fused(fp32_path) if self.request.fuse else (None, {})
        variants = self.variants(fp32_path, fused)
        runtimes = self.runtimes()
        engines, records = self.engines(variants, runtimes)
        served = self.served(engines, self.manifest(checks, fusion, variants, records))
        install_into_repository(served, repository, self.stage / "repository", self.request.serving)
        self.step()
        self.log(f"{self.model.name}: wrote {len(engines)} engines ({', '.join(p.value for p in self.request.precisions)}) into {repository}")
        return served

    def export(self) -> tuple[Path, list[ShapeCheck]]:
        """The FP32 export, checked against PyTorch at shapes other than the traced one."""
        fp32_path = onnx_from_hf(self.model, self.stage / "export" / "fp32.onnx")
        checks = verify_export(self.model, fp32_path)
        worst, largest = min(c.cosine_min for c in checks), max(c.max_abs_error for c in checks)
        shapes = len({(c.batch, c.seq) for c in checks})
        self.log(f"{self.model.name}: export matches PyTorch at {shapes} shapes (worst cosine {worst:.7f}, max abs {largest:.2e})")
        self.step()
        return fp32_path, checks

    def fused(self, fp32_path: Path) -> tuple[onnx.ModelProto | None, dict[str, int]]:
        """The export fused for ONNX Runtime's GPU kernels (the family's optimizer type and passes), checked
        against the export; (None, {}) for a family ONNX Runtime has no fusions for."""
        import onnx

        fused = fused_graph(self.model, fp32_path, self.stage / "export" / "fused.onnx")
        if fused is None:
            self.log(f"{self.model.name}: ONNX Runtime has no fusions for the {self.model.family.name} family: its GPU graph stays unfused")
            return None, {}
        path, stats = fused
        try:
            cosine = self._agreement(fp32_path, path)
        except Exception as error:  # an ONNX Runtime fusion that misreads this graph: serve the export's ops instead
            reason = str(error).splitlines()[0][:300]
            self.log(f"{self.model.name}: ONNX Runtime's fused graph fails its check ({type(error).__name__}: {reason}): its GPU graph stays unfused")
            return None, {}
        attention = "" if stats.get("Attention") or stats.get("MultiHeadAttention") else "; attention NOT fused (it runs as MatMul/Softmax)"
        self.log(f"{self.model.name}: fused {stats} (cosine vs export {cosine:.7f}){attention}")
        return onnx.load(str(path)), stats

    def _agreement(self, reference: Path, candidate: Path) -> float:
        from toolkit.measurement.compare import cosine_rows

        inputs = example_inputs(self.model, 3, 40)
        valid = inputs["attention_mask"].astype(bool)
        name = output_specs(self.model)[0].name
        cosine = float(cosine_rows(run_onnx(reference, inputs)[name][valid], run_onnx(candidate, inputs)[name][valid]).min())
        if not cosine >= 0.99999:
            raise ExportMismatchError(f"fused graph of {self.model.name} disagrees with the export: cosine {cosine:.6f}")
        return cosine

    def variants(self, fp32_path: Path, fused: onnx.ModelProto | None) -> list[tuple[VariantGraphs, dict[str, Any]]]:
        """Each precision's graphs (standard ops; fused when the build fuses) and their node-precision census."""
        import onnx

        exported = onnx.load(str(fp32_path))
        keep = tuple(dict.fromkeys(self.request.keep_fp32 + self.model.family.hybrid_keep_fp32))
        policy = None
        if Precision.AUTO in self.request.precisions:
            from toolkit.precision.auto import build_policy

            with counted_clamps():  # a search converts many candidates: the same weights, clamped again
                policy = build_policy(self.model, exported, self.request.policy, self.log)
        with counted_clamps() as clamps:
            made = self._variant_graphs(exported, fused, keep, policy)
        self.clamps = clamps.summary()
        if clamps.count:
            self.log(
                f"{self.model.name}: {clamps.count} weights below FP16's smallest normal became +-1e-7 in the FP16 graphs "
                f"(largest absolute change {clamps.largest_absolute_change:.1g}; recorded in the manifest)"
            )
        return made

    def _variant_graphs(
        self, exported: onnx.ModelProto, fused: onnx.ModelProto | None, keep: tuple[str, ...], policy: PrecisionPolicy | None
    ) -> list[tuple[VariantGraphs, dict[str, Any]]]:
        folder = self.stage / "variants"
        made = []
        for precision in self.request.precisions:
            graph, fused_graph = self._variant(exported, fused, precision, keep, policy)
            census: dict[str, Any] = {"node_precisions": precision_census(graph)}
            standard = save_onnx(graph, folder / f"{precision.value}.raw.onnx")
            fused_path = None
            if fused_graph is not None:
                fused_path = save_onnx(fused_graph, folder / f"{precision.value}.fused.onnx")
                census["node_precisions_fused"] = precision_census(fused_graph)
            made.append((VariantGraphs(precision.value, standard, fused_path), census))
            self.step()
        return made

    def _variant(
        self,
        exported: onnx.ModelProto,
        fused: onnx.ModelProto | None,
        precision: Precision,
        keep: tuple[str, ...],
        policy: PrecisionPolicy | None,
    ) -> tuple[onnx.ModelProto, onnx.ModelProto | None]:
        """One precision's standard graph and fused graph (None when the build does not fuse)."""
        if precision is Precision.AUTO and policy is not None:
            from toolkit.precision.auto import auto_graphs

            graphs = auto_graphs(policy, exported, fused, self.log)
            self.auto_policy = graphs.record
            return graphs.standard, graphs.fused
        return variant_from_fp32(exported, precision, keep), None if fused is None else fused_variant_from_fp32(fused, precision, keep)

    def runtimes(self) -> list[EngineRuntime]:
        """The requested runtimes that can build here; each one that cannot is said in one line."""
        usable = []
        for runtime in (get_runtime(name) for name in self.request.runtimes):
            reason = runtime.unavailable_reason()
            if reason:
                self.log(f"{self.model.name}: no {runtime.name} engines: {reason}")
            else:
                usable.append(runtime)
        if not usable:
            raise BadInputError(f"no runtime of {','.join(self.request.runtimes)} can build here: choose from {','.join(runtime_names())}")
        return usable

    def engines(
        self, variants: list[tuple[VariantGraphs, dict[str, Any]]], runtimes: list[EngineRuntime]
    ) -> tuple[list[EngineArtifact], dict[str, dict[str, Any]]]:
        """Every runtime's engine of every variant, and what the manifest records of each variant."""
        context = BuildContext(self._profile(), self.work_dir)
        outputs = output_specs(self.model)
        engines, records = [], {}
        for graphs, census in variants:
            record = dict(census)
            for runtime in runtimes:
                built = runtime.build_engine(graphs, self.stage / "engines" / runtime.name / graphs.precision, context)
                engines.append(EngineArtifact(Precision(graphs.precision), runtime.name, built.path, outputs))
                record[runtime.name] = built.record
            records[graphs.precision] = record
            self.step()
        return engines, records

    def _profile(self) -> ShapeProfile:
        request = self.request
        return ShapeProfile(1, request.opt_batch, request.max_batch, self.min_seq, self.opt_seq, self.max_seq)

    def manifest(
        self, checks: list[ShapeCheck], fusion: dict[str, int], variants: list[tuple[VariantGraphs, Any]], records: dict[str, Any]
    ) -> dict[str, Any]:
        model, request = self.model, self.request
        return {
            "name": model.name,
            "fingerprint": self.fingerprint,
            "request": asdict(request),
            "family": model.family.describe(),
            "task": model.task,
            "engine_inputs": list(model.family.engine_inputs()),
            "pooling": asdict(model.pooling) if model.task != "causal-lm" else None,
            "labels": {str(k): v for k, v in model.labels.items()},
            "source": model.provenance,
            "parameters": self.parameters,
            "packages": package_versions(),
            "code": code_version(),
            "policy": {
                "hybrid_keep_fp32": list(request.keep_fp32 + model.family.hybrid_keep_fp32),
                "fp16_io": "fp32",
                **({"auto": self.auto_policy} if self.auto_policy else {}),
            },
            "fp16_clamped_weights": self.clamps,
            "shapes": {"max_batch": request.max_batch, "sequence": [self.min_seq, self.opt_seq, self.max_seq], "profile": asdict(self._profile())},
            "fused_ops": fusion,
            "export_checks": [asdict(check) for check in checks],
            "variants": records,
            "files": {graphs.precision: {"standard": sha256_of(graphs.standard)} for graphs, _ in variants},
            "host": {"machine": platform.node(), "python": platform.python_version(), "gpu": gpu_name()},
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def served(self, engines: list[EngineArtifact], manifest: dict[str, Any]) -> ServedModel:
        model, request = self.model, self.request
        tokenizer_dir = self.stage / "tokenizer"
        backend = getattr(model.tokenizer, "backend_tokenizer", None)
        if backend is not None and getattr(model.tokenizer, "pad_token", None):  # tokenizer.json then names the pad id
            backend.enable_padding(pad_id=model.pad_id, pad_token=str(model.tokenizer.pad_token))
        model.tokenizer.save_pretrained(str(tokenizer_dir))
        return ServedModel(
            name=model.name,
            family=model.family.name,
            tokenizer_dir=tokenizer_dir,
            engine_inputs=model.family.engine_inputs(),
            ensemble_outputs=model.family.ensemble_outputs(model),
            max_batch_size=request.max_batch,
            max_seq_len=self.max_seq,
            min_seq_len=self.min_seq,
            pad_id=model.pad_id,
            lowercase=bool(model.sentence_transformers and model.sentence_transformers.do_lower_case),
            labels=model.labels,
            engines=engines,
            manifest=manifest,
        )


def _check_disk(repository: Path, work_dir: Path, parameters: int) -> None:
    needed = parameters * DISK_BYTES_PER_PARAMETER
    for target in {repository.resolve(), work_dir.resolve()}:
        folder = next(parent for parent in (target, *target.parents) if parent.exists())
        free = shutil.disk_usage(folder).free
        if free < needed:
            raise BadInputError(f"not enough disk space in {folder}: {free / 1e9:.1f} GB free, the build needs about {needed / 1e9:.1f} GB")
