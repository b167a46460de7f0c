"""What a precision policy costs: FP32 node and FLOP shares everywhere, fused-graph GPU latency where a GPU is.

FLOPs come from the shapes one FP32 run at a representative input shape actually produced: ``2 * |output| * K``
for MatMul and Gemm, one per output element for every other compute node (LayerNorm, Softmax and element-wise
ops are a rounding error next to the linear layers, but not zero).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
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
    from toolkit.engines.onnxrt import available_providers

    return "CUDAExecutionProvider" in available_providers()


def gpu_latency_ms(graph: onnx.ModelProto, feeds: Feeds, runs: int = 100, warmup: int = 10) -> float:
    """Median latency of ``graph`` on the GPU, replayed as one CUDA graph on bound device buffers (the served
    path's ``DeviceRunner``, as the engine grid times engines); falls back to plain runs where graphs are refused."""
    from toolkit.backends.common.cuda_graphs import DeviceRunner, cuda_session
    from toolkit.precision.policy import save_onnx

    with tempfile.TemporaryDirectory() as folder:
        path = save_onnx(graph, Path(folder) / "candidate.onnx")
        session, refused = cuda_session(str(path), graphs=True)
        declared = {item.name for item in session.get_inputs()}
        runner = DeviceRunner(session, max_graphs=0 if refused else 1)
        slot = runner.slot({name: value for name, value in feeds.items() if name in declared}, graph=refused is None)
        for _ in range(warmup):
            runner.launch(slot)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            runner.launch(slot)
            times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times) if times else math.nan
