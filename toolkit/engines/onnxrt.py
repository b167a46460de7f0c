"""ONNX Runtime engines: sessions, offline optimisation that keeps the precision policy, direct runs.

ONNX Runtime is the runtime that runs everywhere (CPU here, CUDA with onnxruntime-gpu), so it also
serves as the reference runner for export checks and fidelity.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolkit.errors import BuildError

if TYPE_CHECKING:
    import onnxruntime


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime build."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def session_for(path: Path, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0) -> onnxruntime.InferenceSession:
    """An inference session on ``path``; ``threads`` 0 lets ONNX Runtime choose."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


@lru_cache(maxsize=8)
def _cached_session(path: str, mtime: float) -> onnxruntime.InferenceSession:
    return session_for(Path(path))


def run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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

    from toolkit.precision import precision_census

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise BuildError(f"ONNX Runtime could not load {source.name}: {str(error).splitlines()[0]}") from error

    def compute_census(path: Path) -> dict[str, dict[str, int]]:
        census = precision_census(onnx.load(str(path)))
        census.pop("Cast", None)
        return {op: counts for op, counts in census.items() if op in PRECISION_CRITICAL_OPS}

    if compute_census(target) == compute_census(source):
        return target, "basic-level offline optimisation (precisions unchanged)"
    target.unlink()
    return source, "offline optimisation skipped: it would change node precisions on the CPU provider"


# Ops whose precision the policy fixes; an optimisation must leave their counts per precision unchanged.
PRECISION_CRITICAL_OPS = ("MatMul", "Gemm", "Softmax", "LayerNormalization")


def fused_onnx(source: Path, target: Path, model_type: str, num_heads: int, hidden_size: int) -> tuple[Path, dict[str, int]]:
    """ONNX Runtime's transformer fusions (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu).

    The fused graph uses ``com.microsoft`` ops that only ONNX Runtime runs, and it is what lets every node
    stay on the CUDA provider and be captured in a CUDA graph. Returns the file and the fused-op counts.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=True)
    optimized.save_model_to_file(str(target))
    stats = {op: int(count) for op, count in optimized.get_fused_operator_statistics().items() if count}
    return target, stats
