"""What a precision policy costs: FP32 node and FLOP shares everywhere, fused-graph GPU latency where a GPU is.

FLOPs come from the shapes one FP32 run at a representative input shape actually produced: ``2 * |output| * K``
for MatMul and Gemm, one per output element for every other compute node (LayerNorm, Softmax and element-wise
ops are a rounding error next to the linear layers, but not zero).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.precision.data import Feeds
from toolkit.precision.probe import probe_nodes, run_session, session_of, tensor_types, with_outputs

if TYPE_CHECKING:
    import onnx

LINEAR_OPS = frozenset({"MatMul", "Gemm"})


@dataclass(frozen=True)
class NodeCosts:
    """FLOPs of every float compute node of a prepared FP32 graph at one input shape."""

    flops: dict[str, float]
    op_types: dict[str, str]
    shape: tuple[int, ...]

    @property
    def total(self) -> float:
        return sum(self.flops.values())

    def flop_share(self, fp32_nodes: Iterable[str]) -> float:
        """Share of all FLOPs computed by ``fp32_nodes``."""
        return sum(self.flops.get(name, 0.0) for name in set(fp32_nodes)) / self.total if self.total else 0.0

    def node_share(self, fp32_nodes: Iterable[str]) -> float:
        """Share of compute nodes in ``fp32_nodes``."""
        return len(set(fp32_nodes) & set(self.flops)) / len(self.flops) if self.flops else 0.0


def node_costs(prepared: onnx.ModelProto, feeds: Feeds) -> NodeCosts:
    """FLOPs per compute node of ``prepared`` for ``feeds`` (one run with every float tensor exposed)."""
    types = tensor_types(prepared)
    nodes = [node for node in probe_nodes(prepared, types) if node.compute]
    by_name = {node.name: node for node in prepared.graph.node}
    weights = {init.name: tuple(init.dims) for init in prepared.graph.initializer}
    wanted = [node.tensor for node in nodes]
    wanted += [by_name[n.name].input[0] for n in nodes if n.op_type in LINEAR_OPS and by_name[n.name].input[0] not in weights]
    values = run_session(session_of(with_outputs(prepared, wanted, types)), feeds, list(dict.fromkeys(wanted)))
    flops = {}
    for node in nodes:
        out = values[node.tensor].size
        if node.op_type in LINEAR_OPS:
            proto = by_name[node.name]
            first = weights.get(proto.input[0]) or values[proto.input[0]].shape
            trans_a = any(a.name == "transA" and a.i for a in proto.attribute)
            inner = first[-2] if trans_a else first[-1]
            flops[node.name] = 2.0 * out * inner
        else:
            flops[node.name] = float(out)
    shape = tuple(next(iter(feeds.values())).shape)
    return NodeCosts(flops, {node.name: node.op_type for node in nodes}, shape)


def gpu_available() -> bool:
    """Whether ONNX Runtime has its CUDA execution provider here (onnxruntime-gpu and a GPU)."""
    from toolkit.runtimes.onnxruntime import available_providers

    return "CUDAExecutionProvider" in available_providers()


def gpu_latency_ms(graph: onnx.ModelProto, feeds: Feeds) -> float:
    """Median latency of ``graph`` on the GPU, timed as the engine grid times engines: by the ONNX Runtime plug-in,
    in a process of its own, replayed as a CUDA graph on bound device buffers (the served path)."""
    from toolkit.measurement.timing import TimingBudget, TimingJob
    from toolkit.precision.policy import save_onnx
    from toolkit.runtimes import DEFAULT_RUNTIME, get_runtime

    with tempfile.TemporaryDirectory() as folder:
        path = save_onnx(graph, Path(folder) / "candidate.onnx")
        shape = tuple(next(iter(feeds.values())).shape[:2])
        job = TimingJob(path, {(shape[0], shape[1]): feeds}, "cuda", TimingBudget(0.3, 20, 300, 10), graph_token_limit=1 << 62)
        row = get_runtime(DEFAULT_RUNTIME).time_job(job)[(shape[0], shape[1])]
    return float(row["median_ms"]) if row.get("status") == "ok" else math.nan
