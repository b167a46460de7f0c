"""TensorRT: plans from the precision-variant ONNX graphs (standard ops), as strongly typed networks.

Precision lives in the ONNX graph (TensorRT 11 has no weak typing), so the builder sets no precision
flags: it only clears TF32 so an FP32 plan is a true FP32 reference. TensorRT is imported lazily and each
build runs in a child process, so GPU memory is freed before the next build or a benchmark. Served on
Triton by the native backend, or by ``toolkit/backends/tensorrt/model.py`` where it is absent.
TensorRT cannot be installed on this project's machines: this code is type-checked against
``tensorrt-stubs`` and runs where TensorRT is installed (or in NVIDIA's container).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from toolkit.artifacts import sha256_of
from toolkit.errors import BuildError, DependencyMissingError
from toolkit.measurement.isolated import Send, rows_in_own_process
from toolkit.measurement.timing import Device, Row, Shape, TimingJob, failure, time_for
from toolkit.runtimes.base import (
    BuildContext,
    EngineBuild,
    EngineRuntime,
    EngineServing,
    ShapeProfile,
    VariantGraphs,
    gpu_instance_groups,
)

BACKENDS = Path(__file__).resolve().parent.parent / "backends"

INSTALL_HINT = "install TensorRT 10+ (pip install tensorrt, or use NVIDIA's tritonserver container)"


def is_tensorrt_available() -> bool:
    """True when the TensorRT Python package can be imported (checked without importing it).

    A namespace package without code (what ``tensorrt-stubs`` leaves for type checkers) does not count.
    """
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin not in (None, "namespace")


def plan_from_onnx(
    onnx_path: Path, plan_path: Path, profile: ShapeProfile, timing_cache: Path, allow_tf32: bool = False, workspace_gib: float = 8.0
) -> Path:
    """Build a TensorRT plan from ``onnx_path`` in a child process; returns ``plan_path``.

    Raises DependencyMissingError when TensorRT is absent (never writes a fake plan) and BuildError with
    TensorRT's own messages when parsing or building fails.
    """
    if not is_tensorrt_available():
        raise DependencyMissingError(f"TensorRT is not installed, so no .plan can be built: {INSTALL_HINT}")
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        error = pool.apply(_build_in_child, (str(onnx_path), str(plan_path), profile, str(timing_cache), allow_tf32, workspace_gib))
    if error:
        raise BuildError(f"TensorRT could not build {plan_path}: {error}")
    return plan_path


def _build_in_child(
    onnx_path: str, plan_path: str, profile: ShapeProfile, timing_cache: str, allow_tf32: bool, workspace_gib: float
) -> str | None:
    """The build itself; returns an error message instead of raising across the process boundary."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    # TensorRT 10 needs the flag for strong typing; TensorRT 11 is always strongly typed and ignores it.
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        return "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors)) or "ONNX parse failed"
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not allow_tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    optimization = builder.create_optimization_profile()
    low, opt, high = profile.shapes()
    for index in range(network.num_inputs):
        optimization.set_shape(network.get_input(index).name, low, opt, high)
    config.add_optimization_profile(optimization)
    cache_file = Path(timing_cache)
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        return "build_serialized_network returned nothing (see TensorRT's log above)"
    Path(plan_path).parent.mkdir(parents=True, exist_ok=True)
    Path(plan_path).write_bytes(bytes(serialized))
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    return None


def _time_plans(job: TimingJob, send: Send) -> None:
    """The timing process: deserialize ``job.path`` and time ``execute_async_v3`` at every shape on torch CUDA
    buffers bound once per shape (TensorRT plans run on the GPU only)."""
    import tensorrt as trt
    import torch

    if job.device != "cuda":
        raise DependencyMissingError("TensorRT plans run on a GPU only: pass --device cuda")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(job.path).read_bytes())
    if engine is None:
        raise BuildError(f"{job.path}: TensorRT could not deserialize the plan (built by another TensorRT version?)")
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    for (batch, seq), arrays in job.feeds.items():
        row: Row = {"batch_size": batch, "seq_len": seq}
        try:
            keep = []
            for name in names:
                dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
                if name in inputs:
                    tensor = torch.from_numpy(np.asarray(arrays[name])).to("cuda", dtype).contiguous()
                    context.set_input_shape(name, tuple(tensor.shape))
                else:
                    tensor = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
                context.set_tensor_address(name, tensor.data_ptr())
                keep.append(tensor)

            def run() -> None:
                if not context.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 returned False")
                stream.synchronize()

            row.update(status="ok", **time_for(run, job.budget).as_dict())
        except Exception as error:  # this shape's result; the next shapes may still run
            row.update(failure(error))
        send(row)


class PlanRunner:
    """A deserialized plan on the GPU in this process (torch CUDA buffers, ``execute_async_v3``)."""

    def __init__(self, path: Path) -> None:
        import tensorrt as trt
        import torch

        self.trt, self.torch = trt, torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise BuildError(f"{path}: TensorRT could not deserialize the plan (built by another TensorRT version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]

    def _dtype(self, name: str) -> Any:
        return self.torch.from_numpy(np.zeros(0, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def run(self, feeds: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        torch = self.torch
        keep = {}
        for name in self.input_names:
            keep[name] = torch.from_numpy(np.asarray(feeds[name])).to("cuda", self._dtype(name)).contiguous()
            self.context.set_input_shape(name, tuple(keep[name].shape))
            self.context.set_tensor_address(name, keep[name].data_ptr())
        for name in self.output_names:
            keep[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtype(name), device="cuda")
            self.context.set_tensor_address(name, keep[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 returned False")
        stream.synchronize()
        return {name: keep[name].cpu().numpy() for name in (names or self.output_names)}


def _graph_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two below ``max_batch_size``, and ``max_batch_size``."""
    return sorted({1 << n for n in range(max_batch_size.bit_length()) if 1 << n < max_batch_size} | {max_batch_size})


class TensorRT(EngineRuntime):
    """TensorRT plans (``model.plan``), Triton platform ``tensorrt_plan``; ensembles named ``<name>_<precision>_trt``."""

    name: ClassVar[str] = "tensorrt"
    platform: ClassVar[str] = "tensorrt_plan"
    model_file: ClassVar[str] = "model.plan"
    suffix: ClassVar[str] = "plan"
    ensemble_suffix: ClassVar[str] = "_trt"
    takes_fused_graph: ClassVar[bool] = False  # TensorRT parses standard ONNX ops, not ONNX Runtime's contrib ops

    def unavailable_reason(self) -> str | None:
        return None if is_tensorrt_available() else f"TensorRT is not installed; {INSTALL_HINT}"

    def config_fields(self, serving: EngineServing) -> dict[str, Any]:
        """The native tensorrt backend refuses KIND_CPU instances and reads no ``parameters``; its CUDA graphs are
        ``optimization.cuda.graphs``, one graph per ``graph_spec``: every (batch size, tokenizer bucket) pair, matched
        exactly (a lower bound would run the graph on uninitialized padding rows). Without buckets it captures its
        defaults (the profile's opt shape)."""
        fields: dict[str, Any] = {"instance_group": gpu_instance_groups(serving)}
        if serving.cuda_graphs:
            specs = [
                {"batch_size": batch, "input": {name: {"dim": [seq]} for name in serving.inputs}}
                for seq in serving.buckets
                for batch in _graph_batch_sizes(serving.max_batch_size)
            ]
            fields["optimization"] = {"cuda": {"graphs": True, **({"graph_spec": specs} if specs else {})}}
        return fields

    def backend_files(self) -> dict[str, Path]:
        return {"model.py": BACKENDS / "tensorrt" / "model.py", "triton_batching.py": BACKENDS / "common" / "triton_batching.py"}

    def build_engine(self, graphs: VariantGraphs, target: Path, context: BuildContext) -> EngineBuild:
        plan = plan_from_onnx(graphs.standard, target.with_suffix(".plan"), context.profile, context.work_dir / "timing.cache")
        return EngineBuild(plan, {"file": plan.name, "sha256": sha256_of(plan), "bytes": plan.stat().st_size, "tf32": False})

    def time_job(self, job: TimingJob, on_row: Callable[[Row], None] | None = None) -> dict[Shape, Row]:
        return rows_in_own_process(_time_plans, job, on_row)

    def load(self, path: Path, device: Device) -> PlanRunner:
        if device != "cuda":
            raise DependencyMissingError("TensorRT plans run on a GPU only: pass --device cuda")
        if not is_tensorrt_available():
            raise DependencyMissingError(f"TensorRT is not installed, so {path} cannot run: {INSTALL_HINT}")
        return PlanRunner(path)
