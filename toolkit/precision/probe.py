"""Graph probes for the precision tools: which nodes compute on floats, which block each sits in, and runs of a
graph with chosen intermediate tensors exposed as outputs (ONNX Runtime, CPU by default).

Exposing an intermediate tensor keeps ONNX Runtime from fusing across it (as with Polygraphy's
``--onnx-outputs mark all``), so a probed run may differ from the shipped engine in the last bits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.precision.data import Feeds

if TYPE_CHECKING:
    import onnx
    import onnxruntime

FLOAT, FLOAT16 = 1, 10
# Transformer blocks in exported node names: BERT's /encoder/layer.3/..., GPT-2's /transformer/h.3/...
BLOCK_PATTERN = re.compile(r"/(?:layer|layers|h|block|blocks)\.(\d+)/")
EMBEDDINGS, HEAD = "embeddings", "head"
# Nodes that hold or reshuffle values without arithmetic: never counted as compute, never in a policy group.
NON_COMPUTE_OPS = frozenset({"Constant", "Cast", "Identity", "Shape", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Concat", "Slice"})


def prepared_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with the unique node names and output Identities the precision passes rely on."""
    import onnx as onnx_module

    from toolkit.precision.policy import _prepared

    copy = onnx_module.ModelProto()
    copy.CopyFrom(model)
    return _prepared(copy)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor ONNX shape inference can type (inputs, weights, node outputs)."""
    import onnx as onnx_module

    graph = onnx_module.shape_inference.infer_shapes(model).graph
    types = {info.name: info.type.tensor_type.elem_type for info in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


@dataclass(frozen=True)
class ProbeNode:
    """One node that produces a floating-point tensor: its place in topological order and its block."""

    index: int
    name: str
    op_type: str
    block: str
    tensor: str
    compute: bool


def block_names(model: onnx.ModelProto) -> dict[str, str]:
    """Each node's block: ``layer.N`` / ``h.N`` from its name, ``embeddings`` before the first block, ``head`` after."""
    found = [(node.name, BLOCK_PATTERN.search(node.name)) for node in model.graph.node]
    numbered = [index for index, (_, match) in enumerate(found) if match]
    first = numbered[0] if numbered else len(found)
    last = numbered[-1] if numbered else len(found)
    blocks: dict[str, str] = {}
    for index, (name, match) in enumerate(found):
        if match:
            prefix = match.group(0).strip("/").split(".")[0]
            blocks[name] = f"{prefix}.{match.group(1)}"
        else:
            blocks[name] = EMBEDDINGS if index < first else (HEAD if index > last else _nearest_block(found, index))
    return blocks


def _nearest_block(found: Sequence[tuple[str, re.Match[str] | None]], index: int) -> str:
    """An unnumbered node between blocks belongs to the block before it."""
    for _, match in reversed(found[:index]):
        if match:
            return f"{match.group(0).strip('/').split('.')[0]}.{match.group(1)}"
    return EMBEDDINGS


def probe_nodes(model: onnx.ModelProto, types: dict[str, int] | None = None) -> list[ProbeNode]:
    """Nodes of ``model`` (topological order) with a float (FP32 or FP16) output, and that output's name."""
    types = tensor_types(model) if types is None else types
    blocks = block_names(model)
    nodes = []
    for index, node in enumerate(model.graph.node):
        tensor = next((name for name in node.output if types.get(name) in (FLOAT, FLOAT16)), None)
        if tensor is None or node.op_type == "Constant":
            continue
        nodes.append(ProbeNode(index, node.name, node.op_type, blocks[node.name], tensor, node.op_type not in NON_COMPUTE_OPS))
    return nodes


def compute_node_names(model: onnx.ModelProto, types: dict[str, int] | None = None) -> list[str]:
    """Names of the float compute nodes (what a policy may keep in FP32), in topological order."""
    return [node.name for node in probe_nodes(model, types) if node.compute]


def with_outputs(model: onnx.ModelProto, tensors: Iterable[str], types: dict[str, int]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``tensors`` (typed from ``types``)."""
    import onnx as onnx_module

    copy = onnx_module.ModelProto()
    copy.CopyFrom(model)
    present = {output.name for output in copy.graph.output}
    for name in tensors:
        if name not in present:
            copy.graph.output.append(onnx_module.helper.make_tensor_value_info(name, types[name], None))
            present.add(name)
    return copy


def session_of(
    model: onnx.ModelProto, threads: int = 0, providers: Sequence[Any] = ("CPUExecutionProvider",)
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on an in-memory graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # many short runs on shared CPUs
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))


def run_session(session: onnxruntime.InferenceSession, feeds: Feeds, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Outputs by name (all, or ``names``) for the feeds the session declares."""
    declared = {item.name for item in session.get_inputs()}
    chosen = list(names) if names is not None else [item.name for item in session.get_outputs()]
    values = session.run(chosen, {name: value for name, value in feeds.items() if name in declared})
    return dict(zip(chosen, values, strict=True))
