"""TensorRT plans from the precision-variant ONNX graphs, as strongly typed networks.

Precision lives in the ONNX graph (TensorRT 11 has no weak typing), so the builder sets no precision
flags: it only clears TF32 so an FP32 plan is a true FP32 reference. TensorRT is imported lazily and each
build runs in a child process, so GPU memory is freed before the next build or a benchmark.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import BadInputError, BuildError, DependencyMissingError

INSTALL_HINT = "install TensorRT 10+ (pip install tensorrt, or use NVIDIA's tritonserver container)"


def is_tensorrt_available() -> bool:
    """True when the TensorRT Python package can be imported (checked without importing it).

    A namespace package without code (what ``tensorrt-stubs`` leaves for type checkers) does not count.
    """
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin not in (None, "namespace")


@dataclass(frozen=True)
class ShapeProfile:
    """One optimisation profile for every [batch, sequence] input."""

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32
    min_seq: int = 32
    opt_seq: int = 128
    max_seq: int = 512

    def __post_init__(self) -> None:
        if self.min_batch < 1:
            raise BadInputError(f"batch size must be >= 1, got min batch {self.min_batch}: set --max-batch >= 1")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise BadInputError(
                f"batch profile needs min <= opt <= max, got {self.min_batch}/{self.opt_batch}/{self.max_batch}: fix --max-batch/--opt-batch"
            )
        if self.min_seq < 1 or not self.min_seq <= self.opt_seq <= self.max_seq:
            raise BadInputError(
                f"sequence profile needs 1 <= min <= opt <= max, got {self.min_seq}/{self.opt_seq}/{self.max_seq}: fix --min-seq/--opt-seq/--max-seq"
            )

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(min, opt, max) shapes of a [batch, sequence] input."""
        return (self.min_batch, self.min_seq), (self.opt_batch, self.opt_seq), (self.max_batch, self.max_seq)


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
