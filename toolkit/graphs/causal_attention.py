"""Fuse GPT-2's exported self-attention into ONNX Runtime's ``com.microsoft.Attention`` (``unidirectional=1``).

ONNX Runtime's GPT-2 fusions were written for older transformers exports and fuse no attention in transformers
5's (only LayerNorm and Gelu forms). Unfused, every layer materialises its batch x heads x length x length
scores through separate MatMul, Mul, Add and Softmax kernels, which is what keeps GPT-2's FP16 gain at long
sequences well below BERT-base's.

The pattern is the one ``toolkit.models.export`` writes for a GPT-2 block, after ONNX Runtime's optimizer::

    x -> MatMul(W_qkv) -> Add(b_qkv) -> Split(3) -> {Reshape -> Transpose} x 3
    MatMul(q, k^T) -> Mul(scale) | Div(1/scale) -> Add(causal + padding mask) -> Softmax -> MatMul(., v)
    -> Transpose -> Reshape -> (the output projection)

and it becomes ``Attention(x, W_qkv, b_qkv, attention_mask as int32)`` with ``unidirectional=1``: the causal
mask comes from the attribute, the padding mask from the graph's 2-D ``attention_mask`` (right padding), so
the 4-D additive mask the export built is left unused and pruned. A block that differs in any way is left as
it is. The caller checks the fused graph's outputs against the export's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from toolkit.graphs import tensor_readers

if TYPE_CHECKING:
    import onnx

MASK_INPUT = "attention_mask"
MASK_INT32 = "attention_mask_int32"
KEY_LENGTHS = "attention_key_lengths"  # key_lengths_mask's 1-D form of the padding


class _Graph:
    """Producer/consumer look-ups and constant values of one graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.producer = {output: node for node in self.graph.node for output in node.output}
        self.consumers = tensor_readers(self.graph)
        self.initializers = {init.name: init for init in self.graph.initializer}

    def scalar(self, name: str) -> float | None:
        """The value of a one-element initializer or Constant; None for anything else (read on demand: the
        graph's weights are not converted)."""
        from onnx import numpy_helper

        tensor = self.initializers.get(name)
        node = self.producer.get(name)
        if tensor is None and node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
        if tensor is None or math.prod(tensor.dims) != 1:
            return None
        return float(numpy_helper.to_array(tensor).reshape(()))

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The dims of an initializer; None for any other tensor."""
        tensor = self.initializers.get(name)
        return tuple(tensor.dims) if tensor is not None else None

    def parent(self, node: onnx.NodeProto, index: int, op_type: str) -> onnx.NodeProto | None:
        if index >= len(node.input):
            return None
        found = self.producer.get(node.input[index])
        return found if found is not None and found.op_type == op_type else None

    def only_child(self, node: onnx.NodeProto, op_type: str) -> onnx.NodeProto | None:
        children = self.consumers.get(node.output[0], [])
        return children[0] if len(children) == 1 and children[0].op_type == op_type else None


def _perm(node: onnx.NodeProto | None) -> list[int] | None:
    if node is None:
        return None
    for attribute in node.attribute:
        if attribute.name == "perm":
            return list(attribute.ints)
    return None


def _head(g: _Graph, transpose: onnx.NodeProto | None, perm: list[int]) -> tuple[str, list[onnx.NodeProto]] | None:
    """The Split output that ``Reshape -> Transpose(perm)`` splits into heads, and those two nodes."""
    if _perm(transpose) != perm:
        return None
    assert transpose is not None
    reshape = g.parent(transpose, 0, "Reshape")
    if reshape is None:
        return None
    return reshape.input[0], [reshape, transpose]


def _scale(g: _Graph, node: onnx.NodeProto) -> float | None:
    """The factor a scalar Mul (or the inverse of a scalar Div) applies to the scores."""
    factor = g.scalar(node.input[1])
    if factor is None:
        return None
    return factor if node.op_type == "Mul" else 1.0 / factor


def _match(g: _Graph, softmax: onnx.NodeProto, hidden: int) -> tuple[list[onnx.NodeProto], list[str], str, float] | None:
    """For one Softmax: (nodes to remove, [x, W, b], output name, scale), or None when the block differs."""
    add_mask = g.parent(softmax, 0, "Add")
    scaled = None
    if add_mask is not None:
        scaled = g.parent(add_mask, 0, "Mul") or g.parent(add_mask, 0, "Div")
    if add_mask is None or scaled is None:
        return None
    scale = _scale(g, scaled)
    scores = g.parent(scaled, 0, "MatMul")
    context = g.only_child(softmax, "MatMul")
    if scale is None or scores is None or context is None or context.input[0] != softmax.output[0]:
        return None
    merge_transpose = g.only_child(context, "Transpose")
    merge = g.only_child(merge_transpose, "Reshape") if merge_transpose is not None else None
    q = _head(g, g.producer.get(scores.input[0]), [0, 2, 1, 3])
    k = _head(g, g.producer.get(scores.input[1]), [0, 2, 3, 1])
    v = _head(g, g.producer.get(context.input[1]), [0, 2, 1, 3])
    if merge_transpose is None or merge is None or _perm(merge_transpose) != [0, 2, 1, 3] or q is None or k is None or v is None:
        return None
    split = g.producer.get(q[0])
    if split is None or split.op_type != "Split" or [q[0], k[0], v[0]] != list(split.output):
        return None
    bias_add = g.parent(split, 0, "Add")
    projection = g.parent(bias_add, 0, "MatMul") if bias_add is not None else None
    if bias_add is None or projection is None:
        return None
    weight, bias = projection.input[1], bias_add.input[1]
    if g.shape(weight) != (hidden, 3 * hidden) or g.shape(bias) != (3 * hidden,):
        return None
    if any(len(g.consumers.get(node.output[0], [])) != 1 for node in (projection, bias_add)):  # feeding nothing else
        return None
    nodes = [projection, bias_add, split, *q[1], *k[1], *v[1], scores, scaled, add_mask, softmax, context, merge_transpose, merge]
    return nodes, [projection.input[0], weight, bias], merge.output[0], scale


def live_nodes(nodes: list[onnx.NodeProto], outputs: list[str]) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes ``outputs`` depend on (in their order) and every tensor name those read or give."""
    producer = {output: node for node in nodes for output in node.output}
    needed, stack = set(), list(outputs)
    live: set[int] = set()
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None and id(node) not in live:
            live.add(id(node))
            stack.extend(i for i in node.input if i)
    return [node for node in nodes if id(node) in live], needed


def fuse_causal_attention(model: onnx.ModelProto, num_heads: int, hidden_size: int) -> int:
    """Replace every matching GPT-2 attention block of ``model`` (in place); returns how many were fused."""
    from onnx import TensorProto, helper

    if MASK_INPUT not in {i.name for i in model.graph.input}:
        return 0
    g = _Graph(model)
    head_size = hidden_size // num_heads
    removed: set[int] = set()
    replacement: dict[int, onnx.NodeProto] = {}  # id of the node whose place the fused node takes
    for softmax in [node for node in model.graph.node if node.op_type == "Softmax"]:
        found = _match(g, softmax, hidden_size)
        if found is None:
            continue
        nodes, inputs, output, scale = found
        fused = helper.make_node(
            "Attention", [*inputs, MASK_INT32], [output], name=f"CausalAttention_{len(replacement)}", domain="com.microsoft"
        )
        fused.attribute.extend([helper.make_attribute("num_heads", num_heads), helper.make_attribute("unidirectional", 1)])
        if not math.isclose(scale, 1.0 / math.sqrt(head_size), rel_tol=1e-5):  # the export scaled otherwise
            fused.attribute.append(helper.make_attribute("scale", scale))
        removed |= {id(node) for node in nodes}
        replacement[id(nodes[-1])] = fused
    if not replacement:
        return 0
    cast = helper.make_node("Cast", [MASK_INPUT], [MASK_INT32], name="CausalAttention_mask_int32", to=TensorProto.INT32)
    rebuilt = [cast]
    for node in model.graph.node:
        if id(node) in replacement:
            rebuilt.append(replacement[id(node)])
        elif id(node) not in removed:
            rebuilt.append(node)
    graph = model.graph
    kept, needed = live_nodes(rebuilt, [output.name for output in graph.output])
    provided = {i.name for i in graph.input} | set(g.initializers) | {""} | {out for node in kept for out in node.output}
    if any(name not in provided for node in kept for name in node.input):
        return 0  # a removed tensor still feeds a live node: this export differs, leave the graph as it was
    del graph.node[:]
    graph.node.extend(kept)
    for field in (graph.initializer, graph.value_info):  # drop what only the unfused blocks used
        still = [item for item in field if item.name in needed]
        del field[:]
        field.extend(still)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replacement)


def key_lengths_mask(model: onnx.ModelProto) -> int:
    """Give the fused causal ``Attention`` nodes of ``model`` (in place) the padding as per-row key lengths
    (``mask_index`` of shape [batch], int32) instead of the 2-D mask; returns how many nodes changed.

    Equivalent for right-padded rows, which is what the tokenizer model sends. On a GPU the 2-D mask keeps ONNX
    Runtime on its unfused softmax (37% of GPT-2's FP16 time at batch 32, length 512 on an H100), and key lengths
    are what its fused kernels take (results/h100/NOTES.md has the measured gain); ``fused_onnx`` applies it.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    causal = [
        node
        for node in model.graph.node
        if node.op_type == "Attention"
        and len(node.input) > 3
        and node.input[3] == MASK_INT32
        and any(a.name == "unidirectional" and a.i == 1 for a in node.attribute)
    ]
    if not causal:
        return 0
    axes = f"{KEY_LENGTHS}_axes"
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), axes))
    total = helper.make_node("ReduceSum", [MASK_INPUT, axes], [f"{KEY_LENGTHS}_int64"], name=f"{KEY_LENGTHS}_sum", keepdims=0)
    cast = helper.make_node("Cast", [f"{KEY_LENGTHS}_int64"], [KEY_LENGTHS], name=f"{KEY_LENGTHS}_int32", to=TensorProto.INT32)
    for node in causal:
        node.input[3] = KEY_LENGTHS
    model.graph.node.insert(0, cast)
    model.graph.node.insert(0, total)
    if not any(MASK_INT32 in node.input for node in model.graph.node):  # the 2-D cast has no reader left
        stale = [node for node in model.graph.node if list(node.output) == [MASK_INT32]]
        for node in stale:
            model.graph.node.remove(node)
    return len(causal)
