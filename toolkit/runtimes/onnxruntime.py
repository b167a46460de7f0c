"""ONNX Runtime: the runtime that runs everywhere (CPU here, CUDA with onnxruntime-gpu), so it also serves as
the reference runner for export checks and fidelity.

Engines are ONNX files: the precision variant after a basic offline optimisation that keeps node precisions,
or, when the build fuses (``--fuse``, implied by ``--gpu``), the graph with ONNX Runtime's fused transformer
ops (``fused_onnx``), which lets every node stay on the CUDA provider and be captured in a CUDA graph.
Served on Triton by the native backend, or by ``toolkit/backends/onnxruntime/model.py`` where it is absent.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from toolkit.artifacts import sha256_of
from toolkit.errors import BadInputError, BuildError, DependencyMissingError
from toolkit.measurement.isolated import Send, rows_in_own_process
from toolkit.measurement.timing import Device, Row, Shape, TimingJob, failure, gpu_memory_used_mib, time_for
from toolkit.precision.policy import precision_census
from toolkit.runtimes.base import BuildContext, EngineBuild, EngineRuntime, EngineServing, VariantGraphs, gpu_instance_groups

if TYPE_CHECKING:
    import onnx
    import onnxruntime

BACKENDS = Path(__file__).resolve().parent.parent / "backends"
INSTALL_HINT = "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA)"
# Ops whose precision the policy fixes; an optimisation must leave their counts per precision unchanged.
PRECISION_CRITICAL_OPS = ("MatMul", "Gemm", "Softmax", "LayerNormalization")
PostFusion = Callable[["onnx.ModelProto"], dict[str, int]]


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime build (empty without onnxruntime)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def require_cuda() -> None:
    """Raise DependencyMissingError unless ONNX Runtime has its CUDA execution provider here."""
    if "CUDAExecutionProvider" not in available_providers():
        raise DependencyMissingError("ONNX Runtime has no CUDAExecutionProvider here; install onnxruntime-gpu or pass --device cpu")


def session_for(path: Path, device: Device = "cpu", cuda_graph: bool = False, threads: int = 0) -> onnxruntime.InferenceSession:
    """An inference session on ``path`` for ``device`` (CUDA: TF32 off, CUDA graphs when ``cuda_graph`` and
    ONNX Runtime accepts them). ``threads`` 0 lets ONNX Runtime choose the CPU threads."""
    from toolkit.runtimes import ort_device

    if not Path(path).is_file():
        raise BadInputError(f"no ONNX file at {path}; build the repository first (make build)")
    if device == "cpu":
        if cuda_graph:
            raise BadInputError("CUDA graphs need --device cuda; drop --cuda-graphs for CPU timing")
        return ort_device.cpu_session(str(path), threads)
    require_cuda()
    return ort_device.cuda_session(str(path), graphs=cuda_graph, threads=threads)[0]


@lru_cache(maxsize=8)
def _cached_session(path: str, mtime: float) -> onnxruntime.InferenceSession:
    return session_for(Path(path))


def run_onnx(path: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the graph at ``path`` on the CPU with the inputs it declares; outputs by name."""
    session = _cached_session(str(path), path.stat().st_mtime)
    declared = {item.name for item in session.get_inputs()}
    feeds = {name: value for name, value in inputs.items() if name in declared}
    names = [item.name for item in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def optimized_onnx(source: Path, target: Path) -> tuple[Path, str]:
    """Offline basic-level optimisation (constant folding, redundant nodes), kept only if it keeps precisions.

    Returns the file to ship and why. On the CPU provider ONNX Runtime wraps FP16 ops it has no kernel for
    in casts to FP32, which would change the graph's numerics for every runtime: then the source is kept
    and ONNX Runtime optimises per provider at load time instead.
    """
    import onnx
    import onnxruntime as ort

    target.parent.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise BuildError(f"ONNX Runtime could not load {source.name}: {str(error).splitlines()[0]}") from error

    def critical_census(path: Path) -> dict[str, dict[str, int]]:
        census = precision_census(onnx.load(str(path)))
        return {op: counts for op, counts in census.items() if op in PRECISION_CRITICAL_OPS}

    if critical_census(target) == critical_census(source):
        return target, "basic-level offline optimisation (precisions unchanged)"
    target.unlink()
    return source, "offline optimisation skipped: it would change node precisions on the CPU provider"


def fused_onnx(
    source: Path,
    target: Path,
    model_type: str,
    num_heads: int,
    hidden_size: int,
    post_fusion: PostFusion | None = None,
    fusions_off: tuple[str, ...] = (),
) -> tuple[Path, dict[str, int]]:
    """ONNX Runtime's transformer fusions for ``model_type`` (Attention, EmbedLayerNormalization,
    SkipLayerNormalization, BiasGelu...), then the family's own passes (``post_fusion``: GPT-2's causal
    attention and padded vocabulary, for example), which return counts of what they did.

    The fused graph uses ``com.microsoft`` ops that only ONNX Runtime runs; it is what lets every node stay on
    the CUDA provider and be captured in a CUDA graph. ``fusions_off`` names ``FusionOptions`` flags to turn off
    (a family's fusion that misreads its graph). Returns the file and the fused-op counts.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(model_type)
    for flag in fusions_off:
        if not hasattr(options, flag):
            raise ValueError(f"ONNX Runtime's FusionOptions has no {flag}")
        setattr(options, flag, False)
    optimized = optimize_model(
        str(source), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size, optimization_options=options, opt_level=0, use_gpu=True
    )
    stats = {op: int(count) for op, count in optimized.get_fused_operator_statistics().items() if count}
    if post_fusion is not None:
        stats.update(post_fusion(optimized.model))
    optimized.save_model_to_file(str(target))
    return target, stats


def session_memory_mib(path: Path, inputs: Mapping[str, np.ndarray], device: Device = "cuda") -> float | None:
    """GPU memory one engine adds once loaded and run once (None on CPU or without a GPU)."""
    if device != "cuda":
        return None
    before = gpu_memory_used_mib()
    if before is None:
        return None
    session = session_for(path, device)
    session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})
    after = gpu_memory_used_mib()
    del session
    return None if after is None else max(0.0, after - before)


def _time_shapes(job: TimingJob, send: Send) -> None:
    """The timing process: one session on ``job.path``, every shape timed as the server runs it (on CUDA: I/O
    binding on bound device buffers and, up to the job's token limit, a CUDA graph replay; on the CPU,
    ``session.run``), one row sent per shape."""
    from toolkit.runtimes.ort_device import NUMPY_OF_ORT, DeviceRunner, cuda_session

    runner = None
    if job.device == "cuda":
        require_cuda()
        session, refused = cuda_session(str(job.path), provider_options=dict(job.options))
        runner = DeviceRunner(session, max_graphs=0 if refused else 1 << 20)
    else:
        session = session_for(job.path, "cpu")
    types = {i.name: NUMPY_OF_ORT[i.type] for i in session.get_inputs()}
    for (batch, seq), arrays in job.feeds.items():
        row: Row = {"batch_size": batch, "seq_len": seq}
        try:
            feeds = {name: np.asarray(arrays[name]).astype(dtype) for name, dtype in types.items()}
            if runner is not None:
                graph = runner.max_graphs > 0 and batch * seq <= job.graph_token_limit
                slot = runner.slot(feeds, graph=graph)  # its buffers go when the next shape's slot replaces it
                timing = time_for(lambda: runner.launch(slot), job.budget)  # noqa: B023 (called at once)
                row["cuda_graph"] = graph
            else:
                timing = time_for(lambda: session.run(None, feeds), job.budget)  # noqa: B023
            row.update(status="ok", **timing.as_dict())
        except Exception as error:  # this shape's result; the next shapes may still run
            row.update(failure(error))
        send(row)


class OrtRunner:
    """An ONNX Runtime session in this process: ``session.run`` on the CPU, I/O binding on CUDA (no graph)."""

    def __init__(self, path: Path, device: Device) -> None:
        from toolkit.runtimes.ort_device import NUMPY_OF_ORT, DeviceRunner

        self.path = path
        self.session = session_for(path, device)
        self.device = DeviceRunner(self.session, max_graphs=0) if device == "cuda" else None
        self.types = {i.name: NUMPY_OF_ORT.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise BadInputError(f"engine {self.path.name} needs inputs {missing}; got {sorted(feeds)}")
        wanted = list(names) if names is not None else self.output_names
        own = {name: np.asarray(feeds[name]).astype(dtype, copy=False) for name, dtype in self.types.items()}
        values = self.session.run(wanted, own) if self.device is None else self.device.run(own, wanted)
        return dict(zip(wanted, values, strict=True))


class OnnxRuntime(EngineRuntime):
    """ONNX Runtime engines (``model.onnx``), Triton platform ``onnxruntime_onnx``."""

    name: ClassVar[str] = "onnxruntime"
    platform: ClassVar[str] = "onnxruntime_onnx"
    model_file: ClassVar[str] = "model.onnx"
    suffix: ClassVar[str] = "onnx"
    ensemble_suffix: ClassVar[str] = ""
    takes_fused_graph: ClassVar[bool] = True

    def unavailable_reason(self) -> str | None:
        return None if importlib.util.find_spec("onnxruntime") is not None else f"onnxruntime is not installed; {INSTALL_HINT}"

    def config_fields(self, serving: EngineServing) -> dict[str, Any]:
        """``intra_op_thread_count`` is the native onnxruntime backend's name, read by ours too. ``enable_cuda_graph``
        and ``cuda_graph_batch_buckets`` are ours alone (the native backend has no CUDA-graph option and ignores them). On GPUs the CUDA EP gets
        ``use_tf32=0`` through the native ``cuda`` accelerator, as ours always does: FP32 engines compute in FP32."""
        parameters: dict[str, object] = {}
        if serving.intra_op_threads:
            parameters["intra_op_thread_count"] = serving.intra_op_threads
        if serving.cuda_graphs:
            parameters["enable_cuda_graph"] = 1
            if serving.batch_buckets != "off":
                parameters["cuda_graph_batch_buckets"] = serving.batch_buckets
        fields: dict[str, Any] = {
            "instance_group": gpu_instance_groups(serving) if serving.gpu else [{"kind": "KIND_CPU", "count": serving.instances}],
            "parameters": {key: {"string_value": str(value)} for key, value in parameters.items()},
        }
        if serving.gpu:
            cuda = {"name": "cuda", "parameters": {"use_tf32": "0"}}
            fields["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [cuda]}}
        return fields

    def backend_files(self) -> dict[str, Path]:
        return {
            "model.py": BACKENDS / "onnxruntime" / "model.py",
            "ort_device.py": Path(__file__).resolve().parent / "ort_device.py",
            "triton_batching.py": BACKENDS / "common" / "triton_batching.py",
            "step_timing.py": BACKENDS / "common" / "step_timing.py",
        }

    def one_hop_backend(self) -> dict[str, Path] | None:
        return {
            "model.py": BACKENDS / "onehop" / "model.py",
            "text_encoder.py": BACKENDS / "common" / "text_encoder.py",
            "ort_device.py": Path(__file__).resolve().parent / "ort_device.py",
            "step_timing.py": BACKENDS / "common" / "step_timing.py",
        }

    def build_engine(self, graphs: VariantGraphs, target: Path, context: BuildContext) -> EngineBuild:
        if graphs.fused is not None:  # already written by the build, external data beside it under its own name
            path, how = graphs.fused, "ONNX Runtime transformer fusions (GPU)"
        else:
            path, how = optimized_onnx(graphs.standard, target.with_suffix(".onnx"))
        return EngineBuild(path, {"file": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size, "optimisation": how})

    def time_job(self, job: TimingJob, on_row: Callable[[Row], None] | None = None) -> dict[Shape, Row]:
        return rows_in_own_process(_time_shapes, job, on_row)

    def load(self, path: Path, device: Device) -> OrtRunner:
        return OrtRunner(path, device)

    def memory_mib(self, path: Path, feeds: Mapping[str, np.ndarray], device: Device) -> float | None:
        return session_memory_mib(path, feeds, device)


__all__ = ["INSTALL_HINT", "OnnxRuntime", "available_providers", "fused_onnx", "optimized_onnx", "require_cuda", "run_onnx", "session_for"]
