"""ONNX Runtime engines: sessions, offline optimisation that keeps the precision policy, direct runs.

ONNX Runtime is the runtime that runs everywhere (CPU here, CUDA with onnxruntime-gpu), so it also
serves as the reference runner for export checks and fidelity.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from toolkit.errors import BadInputError, BuildError, DependencyMissingError

if TYPE_CHECKING:
    import onnxruntime

Device = Literal["cpu", "cuda"]


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise DependencyMissingError("onnxruntime is not installed; `pip install onnxruntime`") from error
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime build (empty without onnxruntime)."""
    try:
        return list(_onnxruntime().get_available_providers())
    except DependencyMissingError:
        return []


def require_cuda() -> None:
    """Raise DependencyMissingError unless ONNX Runtime has its CUDA execution provider here."""
    if "CUDAExecutionProvider" not in available_providers():
        raise DependencyMissingError("ONNX Runtime has no CUDAExecutionProvider here; install onnxruntime-gpu or pass --device cpu")


def session_for(path: Path, device: Device = "cpu", cuda_graph: bool = False, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An inference session on ``path`` for ``device`` (CUDA: TF32 off, optional CUDA graphs).

    ``threads`` None or 0 lets ONNX Runtime choose the CPU threads.
    """
    ort = _onnxruntime()
    if not Path(path).is_file():
        raise BadInputError(f"no ONNX file at {path}; build the repository first (make build)")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # callers report failures themselves
    if threads:
        options.intra_op_num_threads = threads
    if device == "cuda":
        require_cuda()
        cuda_options = {"use_tf32": "0", "enable_cuda_graph": "1" if cuda_graph else "0"}
        providers: list[Any] = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
    else:
        if cuda_graph:
            raise BadInputError("CUDA graphs need --device cuda; drop --cuda-graph for CPU timing")
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


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
    """ONNX Runtime's transformer fusions (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu),
    plus GPT-2's causal attention (``causal_attention.py``), which ONNX Runtime's optimizer misses, given its
    padding as per-row key lengths (what ONNX Runtime's fused attention kernels take), and a vocabulary
    projection padded to aligned widths (``vocab_padding.py``).

    The fused graph uses ``com.microsoft`` ops that only ONNX Runtime runs, and it is what lets every node
    stay on the CUDA provider and be captured in a CUDA graph. Returns the file and the fused-op counts.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    from toolkit.engines.causal_attention import fuse_causal_attention, key_lengths_mask
    from toolkit.engines.vocab_padding import pad_vocab_projection

    optimized = optimize_model(str(source), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=True)
    stats = {op: int(count) for op, count in optimized.get_fused_operator_statistics().items() if count}
    if model_type == "gpt2" and not stats.get("Attention"):  # ONNX Runtime's own GPT-2 fusion missed transformers 5's export
        causal = fuse_causal_attention(optimized.model, num_heads, hidden_size)
        stats.update({"Attention": causal, "AttentionKeyLengths": key_lengths_mask(optimized.model)} if causal else {})
    padded = pad_vocab_projection(optimized.model)
    stats.update({"PaddedVocabProjection": padded} if padded else {})
    optimized.save_model_to_file(str(target))
    return target, stats
