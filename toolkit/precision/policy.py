"""Precision policy: FP32 ONNX graph -> fp16 and hybrid ONNX graphs with explicit casts.

TensorRT 11 is strongly typed only, so precision lives in the graph: every runtime (TensorRT, ONNX
Runtime) runs these graphs as written.

- ``fp32``: the export as is.
- ``fp16``: every floating-point op in FP16; graph inputs/outputs stay FP32 (casts at the edges).
- ``hybrid`` (the paper's policy): linear layers (MatMul/Gemm) and activations in FP16; the ops named in
  ``DEFAULT_KEEP_FP32`` in FP32, together with the element-wise ops and gathers that feed them (the
  residual adds and embeddings that feed each LayerNorm, the scale and mask that feed each Softmax), walked
  back up to the nearest op outside ``ISLAND_OPS``. So the residual stream stays FP32 and cannot overflow
  before normalisation.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import BadInputError
from toolkit.graphs import tensor_readers
from toolkit.names import Precision

if TYPE_CHECKING:
    import onnx

# Op types kept in FP32 by the hybrid policy: Softmax, LayerNormalization, ReduceMean (the reduction at the
# heart of a decomposed, hand-written LayerNorm) and ReduceSum (the in-graph mean pooling's sum over tokens,
# which would overflow FP16 where the states carry large channels).
DEFAULT_KEEP_FP32: tuple[str, ...] = ("Softmax", "LayerNormalization", "ReduceMean", "ReduceSum")
# Ops that join an FP32 island when they feed one (walked back from each kept op): the residual adds and
# embeddings before a LayerNorm, the scale and mask before a Softmax, the square of a decomposed variance.
ISLAND_OPS: frozenset[str] = frozenset({"Add", "Sub", "Mul", "Div", "Gather", "Where", "Cast", "Reciprocal", "Pow", "Sqrt"})
# ONNX Runtime's fused ops that contain a kept op: keeping LayerNormalization keeps these too.
FUSED_FORMS: dict[str, tuple[str, ...]] = {
    "LayerNormalization": ("SkipLayerNormalization", "EmbedLayerNormalization", "SkipSimplifiedLayerNormalization"),
}
# The true FP16 limit: the converter's default (1e4) would silently clamp weights and hide overflow.
FP16_MAX = 65504.0

FLOAT_TYPES = {1: "fp32", 10: "fp16", 11: "fp64", 16: "bf16"}
# onnxconverter-common's warning for each weight it moves to FP16's smallest normal (1e-7 in magnitude).
CLAMP_WARNING = re.compile(r"the float32 number (\S+) will be truncated to (\S+)")


@dataclass
class Clamps:
    """Weights the FP16 conversion moved to FP16's smallest normal: how many, and the largest change."""

    count: int = 0
    largest_relative_change: float = 0.0
    largest_absolute_change: float = 0.0
    unrelated: list[warnings.WarningMessage] = field(default_factory=list)

    def add(self, original: float, clamped: float) -> None:
        self.count += 1
        change = abs(clamped - original)
        self.largest_absolute_change = max(self.largest_absolute_change, change)
        self.largest_relative_change = max(self.largest_relative_change, change / abs(original) if original else 0.0)

    def summary(self) -> dict[str, float | int]:
        """What the manifest records."""
        return {"count": self.count, "largest_relative_change": self.largest_relative_change, "largest_absolute_change": self.largest_absolute_change}


@contextmanager
def counted_clamps() -> Iterator[Clamps]:
    """Collect the converter's one-warning-per-clamped-weight (dozens to hundreds per model) into one
    :class:`Clamps`; other warnings are shown as usual when the block ends."""
    clamps = Clamps()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield clamps
    for message in caught:
        match = CLAMP_WARNING.search(str(message.message))
        if match:
            clamps.add(float(match.group(1)), float(match.group(2)))
        else:
            warnings.warn_explicit(message.message, message.category, message.filename, message.lineno)


def parse_keep_fp32(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Validate a ``--keep-fp32`` list (comma-separated op types) against ONNX's operator names."""
    import onnx.defs

    if value is None:
        return DEFAULT_KEEP_FP32
    items = [item.strip() for item in (value.split(",") if isinstance(value, str) else value) if item.strip()]
    known = {schema.name for schema in onnx.defs.get_all_schemas()}
    unknown = [item for item in items if item not in known]
    if unknown:
        raise BadInputError(f"--keep-fp32 names unknown ONNX op types {unknown}; use names such as {','.join(DEFAULT_KEEP_FP32)}")
    return tuple(items)


def hybrid_fp32_nodes(model: onnx.ModelProto, keep_fp32: Iterable[str] = DEFAULT_KEEP_FP32) -> set[str]:
    """Names of the nodes the hybrid policy keeps in FP32: the kept op types and the islands feeding them."""
    keep = set(keep_fp32)
    keep |= {fused for op in keep_fp32 for fused in FUSED_FORMS.get(op, ())}
    return fp32_island(model, [node.name for node in model.graph.node if node.op_type in keep], keep)


def fp32_island(model: onnx.ModelProto, anchors: Iterable[str], also: Iterable[str] = ()) -> set[str]:
    """Names of the nodes ``anchors`` and the island feeding them: producers walked back while they are in
    ``ISLAND_OPS`` or of an op type in ``also`` (the walk the hybrid policy makes from its kept ops)."""
    walk = ISLAND_OPS | set(also)
    nodes = list(model.graph.node)
    producer = {output: node for node in nodes for output in node.output}
    chosen = set(anchors)
    selected: set[str] = set()
    stack = [node for node in nodes if node.name in chosen]
    while stack:
        node = stack.pop()
        if node.name in selected:
            continue
        selected.add(node.name)
        for tensor in node.input:
            parent = producer.get(tensor)
            if parent is not None and parent.op_type in walk:
                stack.append(parent)
    return selected


def _same_cast(first: bytes, node: onnx.NodeProto) -> bool:
    """Whether ``node`` is a Cast with the same input, output and target type as the serialized ``first``."""
    import onnx as onnx_module

    earlier = onnx_module.NodeProto()
    earlier.ParseFromString(first)
    return (
        earlier.op_type == "Cast"
        and list(earlier.input) == list(node.input)
        and list(earlier.output) == list(node.output)
        and list(earlier.attribute) == list(node.attribute)
    )


def _prepared(model: onnx.ModelProto) -> onnx.ModelProto:
    """Unique node names (the block list and the census name nodes), and graph outputs read by no node.

    The converter's ``keep_io_types`` mistypes a graph output that other nodes also consume (BERT's pooler
    reads ``last_hidden_state``), so such outputs get an Identity of their own; Identity nodes that only
    alias a weight become weights of their own; Identity nodes that only feed Casts go.
    """
    import onnx as onnx_module

    graph = model.graph
    # Identity nodes over weights (the exporter's de-duplicated equal parameters) become weights of their
    # own: one shared initializer cannot be FP32 for a kept node and FP16 for a converted one.
    weights = {init.name: init for init in graph.initializer}
    outputs = {output.name for output in graph.output}
    aliases = [node for node in graph.node if node.op_type == "Identity" and node.input[0] in weights and node.output[0] not in outputs]
    for node in aliases:
        copy = onnx_module.TensorProto()
        copy.CopyFrom(weights[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
    if aliases:
        kept = [node for node in graph.node if all(node is not alias for alias in aliases)]
        del graph.node[:]
        graph.node.extend(kept)
    consumed = {name for node in graph.node for name in node.input}
    for output in graph.output:
        if output.name in consumed:
            internal = f"{output.name}__internal"
            for node in graph.node:
                node.output[:] = [internal if name == output.name else name for name in node.output]
                node.input[:] = [internal if name == output.name else name for name in node.input]
            graph.node.append(onnx_module.helper.make_node("Identity", [internal], [output.name], name=f"{output.name}__output"))
    # A converter may insert the same Cast twice under one output name; identical definitions are one node.
    producers: dict[str, bytes] = {}
    unique = []
    for node in graph.node:
        signature = node.SerializeToString() if node.op_type == "Cast" else b""
        if signature and node.output[0] in producers and _same_cast(producers[node.output[0]], node):
            continue
        producers.update(dict.fromkeys(node.output, signature))
        unique.append(node)
    if len(unique) < len(graph.node):
        del graph.node[:]
        graph.node.extend(unique)
    _bypass_identities_before_casts(graph)
    seen: Counter[str] = Counter()
    for index, node in enumerate(graph.node):
        base = node.name or f"{node.op_type}_{index}"
        seen[base] += 1
        node.name = base if seen[base] == 1 else f"{base}_{seen[base]}"
    return model


def _bypass_identities_before_casts(graph: onnx.GraphProto) -> None:
    """Casts read past an Identity that only feeds Casts (in place).

    After a conversion with ``keep_io_types`` an output's Identity (added above) feeds the Cast back to
    FP32. ONNX Runtime can run that Identity as a device copy when its input has other readers (one per
    run in the BERT-base profile); GPT-2's logits at batch 32, length 512 are 1.6 GB copied for nothing.
    """
    outputs = {output.name for output in graph.output}
    consumers = tensor_readers(graph)
    for node in [n for n in graph.node if n.op_type == "Identity" and n.output[0] not in outputs]:
        readers = consumers.get(node.output[0], [])
        if not readers or any(reader.op_type != "Cast" for reader in readers):
            continue
        for reader in readers:
            reader.input[0] = node.input[0]
        graph.node.remove(node)


def fp16_from_fp32(model: onnx.ModelProto, keep_fp32_nodes: Iterable[str] = ()) -> onnx.ModelProto:
    """An FP16 graph of ``model`` with FP32 inputs/outputs; nodes in ``keep_fp32_nodes`` stay FP32."""
    from onnxconverter_common import float16

    # The converter retypes a Cast's output but not its `to` attribute: the exporter's own casts stay as written.
    exporter_casts = {node.name for node in model.graph.node if node.op_type == "Cast"}

    declared = {output.name: output.type.tensor_type.elem_type for output in model.graph.output}
    converted: onnx.ModelProto = float16.convert_float_to_float16(
        model,
        max_finite_val=FP16_MAX,
        keep_io_types=True,
        node_block_list=sorted(set(keep_fp32_nodes) | exporter_casts),
        op_block_list=float16.DEFAULT_OP_BLOCK_LIST,
    )
    _restore_fp32_outputs(converted, declared)
    _bypass_identities_before_casts(converted.graph)
    return converted


def _restore_fp32_outputs(model: onnx.ModelProto, declared: dict[str, int]) -> None:
    """Undo the converter's FP16 cast of a graph output produced by a kept (FP32) node despite keep_io_types.

    The converter appends ``Cast(to=FLOAT16)`` after such a node and declares the output FP16; the cast is made
    an FP32 identity again, so every graph output keeps the type the export gave it.
    """
    import onnx as onnx_module

    float32, float16_type = onnx_module.TensorProto.FLOAT, onnx_module.TensorProto.FLOAT16
    producers = {output: node for node in model.graph.node for output in node.output}
    for output in model.graph.output:
        if declared.get(output.name) != float32 or output.type.tensor_type.elem_type != float16_type:
            continue
        cast = producers.get(output.name)
        if cast is None or cast.op_type != "Cast":
            raise ValueError(f"graph output {output.name} became FP16 and is not produced by a Cast: cannot restore FP32")
        for attribute in cast.attribute:
            if attribute.name == "to":
                attribute.i = float32
        output.type.tensor_type.elem_type = float32


def hybrid_from_fp32(model: onnx.ModelProto, keep_fp32: Iterable[str] = DEFAULT_KEEP_FP32) -> onnx.ModelProto:
    """The paper's hybrid graph: FP16 linear layers, ``keep_fp32`` ops and the islands feeding them in FP32;
    an FP32 value goes to its FP32 readers directly, not through FP16 and back (:func:`bypass_fp16_round_trips`)."""
    converted = fp16_from_fp32(model, hybrid_fp32_nodes(model, keep_fp32))
    bypass_fp16_round_trips(converted)
    return converted


def variant_from_fp32(model: onnx.ModelProto, precision: Precision, keep_fp32: Iterable[str] = DEFAULT_KEEP_FP32) -> onnx.ModelProto:
    """Dispatch on the precision name; returns a new graph (the input is not modified)."""
    import onnx as onnx_module

    copy = onnx_module.ModelProto()
    copy.CopyFrom(model)
    copy = _prepared(copy)
    if precision is Precision.FP32:
        return copy
    if precision is Precision.FP16:
        return fp16_from_fp32(copy)
    return hybrid_from_fp32(copy, keep_fp32)


def fused_variant_from_fp32(model: onnx.ModelProto, precision: Precision, keep_fp32: Iterable[str] = DEFAULT_KEEP_FP32) -> onnx.ModelProto:
    """Precision variant of a graph fused by ONNX Runtime (``com.microsoft`` ops), via ONNX Runtime's converter.

    onnxconverter-common cannot type the fused ops' outputs and writes invalid graphs for them; ONNX Runtime's
    own converter infers them symbolically. The fused LayerNorm forms contain their residual add and
    embedding sum, so blocking them (and Softmax) is the whole hybrid policy here; the fused Attention kernel
    takes FP16 inputs and accumulates its softmax in FP32 (ONNX Runtime's kernels).
    """
    import onnx as onnx_module
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    copy = onnx_module.ModelProto()
    copy.CopyFrom(model)
    copy = _prepared(copy)
    if precision is Precision.FP32:
        return copy
    block = list(DEFAULT_OP_BLOCK_LIST)
    if precision is Precision.HYBRID:
        block += sorted(set(keep_fp32) | {fused for op in keep_fp32 for fused in FUSED_FORMS.get(op, ())})
    _unshare_small_weights(copy)
    wrapped = OnnxModel(copy)
    wrapped.convert_float_to_float16(keep_io_types=True, op_block_list=block)
    # The converter names each inserted Cast after the tensor it casts: a weight read by two kept nodes
    # gets two Casts of one name, which ONNX Runtime rejects.
    return _prepared(wrapped.model)


def _unshare_small_weights(model: onnx.ModelProto, max_elements: int = 1 << 20) -> None:
    """Give each extra reader of a small shared weight its own copy (in place).

    ONNX Runtime's converter casts a weight once per reader under one name, so a bias read by two kept
    nodes would be defined twice. Large shared weights (tied embeddings) stay shared.
    """
    import math

    import onnx as onnx_module

    weights = {init.name: init for init in model.graph.initializer}
    seen: Counter[str] = Counter()
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            init = weights.get(name)
            if init is None or math.prod(init.dims) > max_elements:
                continue
            seen[name] += 1
            if seen[name] > 1:
                copy = onnx_module.TensorProto()
                copy.CopyFrom(init)
                copy.name = f"{name}__reader{seen[name]}"
                model.graph.initializer.append(copy)
                node.input[index] = copy.name


def node_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """Compute precision of every node that touches floats: ``fp16``/``fp32`` (by its float inputs) or ``cast``."""
    import onnx as onnx_module

    inferred = onnx_module.shape_inference.infer_shapes(model)
    graph = inferred.graph
    elem_type: dict[str, int] = {}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        elem_type[info.name] = info.type.tensor_type.elem_type
    for init in graph.initializer:
        elem_type[init.name] = init.data_type
    result: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Cast":
            result[node.name] = "cast"
            continue
        tensors = [name for name in list(node.input) + list(node.output) if name]
        kinds = {FLOAT_TYPES[elem_type[name]] for name in tensors if elem_type.get(name) in FLOAT_TYPES}
        if not kinds:
            continue
        # An op computes in the precision of its float inputs; outputs decide for ops with no float input.
        inputs = {FLOAT_TYPES[elem_type[name]] for name in node.input if elem_type.get(name) in FLOAT_TYPES}
        chosen = inputs or kinds
        result[node.name] = "fp16" if chosen == {"fp16"} else ("fp32" if chosen == {"fp32"} else "mixed")
    return result


def precision_census(model: onnx.ModelProto) -> dict[str, dict[str, int]]:
    """Count nodes per op type and precision, e.g. ``{"MatMul": {"fp16": 36}, "Softmax": {"fp32": 6}}``."""
    op_of = {node.name: node.op_type for node in model.graph.node}
    census: dict[str, Counter[str]] = {}
    for name, kind in node_precisions(model).items():
        census.setdefault(op_of[name], Counter())[kind] += 1
    return {op: dict(sorted(counts.items())) for op, counts in sorted(census.items())}


def save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model``; graphs over protobuf's 2 GB limit go to an external-data file beside it."""
    import onnx as onnx_module

    path.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > 1_800_000_000
    onnx_module.save_model(model, str(path), save_as_external_data=large, location=f"{path.name}.data" if large else None)
    return path


def bypass_fp16_round_trips(model: onnx.ModelProto) -> int:
    """Readers of ``Cast(to=FP32)(Cast(to=FP16)(x))`` with ``x`` FP32 read ``x`` itself (in place); returns how many.

    onnxconverter-common casts a kept node's output to FP16 and back up for each kept reader, and its clean-up
    removes the pair only for a tensor with one reader. So an FP32 island whose tensor has several readers
    (a LayerNorm output read by the next residual Add and by FP16 MatMuls; a residual read by the next
    LayerNorm and the next Add) passes its values through FP16: rounded, and infinite past 65504. The hybrid
    and policy graphs (``policy_file.graph_from_policy``) drop it, so keeping a node in FP32 keeps its value
    FP32 all the way to its FP32 readers (hybrid's error against FP32 fell from 1-cos 8.8e-7 to 3.8e-7 on
    BERT-base, 1.4e-6 to 0.8e-6 on GPT-2, GPU-like FP16 on the shipped corpus).
    """
    import onnx as onnx_module

    graph = model.graph
    float32, float16_type = onnx_module.TensorProto.FLOAT, onnx_module.TensorProto.FLOAT16
    types = {info.name: info.type.tensor_type.elem_type for info in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    producer = {output: node for node in graph.node for output in node.output}

    def cast_to(node: onnx.NodeProto | None, target: int) -> bool:
        return node is not None and node.op_type == "Cast" and any(a.name == "to" and a.i == target for a in node.attribute)

    rewired = 0
    for node in graph.node:
        for index, name in enumerate(node.input):
            up = producer.get(name)
            down = producer.get(up.input[0]) if up is not None and cast_to(up, float32) else None
            if down is not None and cast_to(down, float16_type) and types.get(down.input[0]) == float32:
                node.input[index] = down.input[0]
                rewired += 1
    outputs = {output.name for output in graph.output}
    for node in graph.node:  # a graph output written by the round trip's Cast(FP32) copies ``x`` instead
        down = producer.get(node.input[0]) if node.output and node.output[0] in outputs and cast_to(node, float32) else None
        if down is not None and cast_to(down, float16_type) and types.get(down.input[0]) == float32:
            node.op_type, node.input[0] = "Identity", down.input[0]
            del node.attribute[:]
            rewired += 1
    _drop_unread_casts(graph)
    return rewired


def _drop_unread_casts(graph: onnx.GraphProto) -> None:
    """Remove Casts whose output nobody reads (repeatedly: a dropped Cast may leave its own input unread)."""
    outputs = {output.name for output in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unread = [node for node in graph.node if node.op_type == "Cast" and node.output[0] not in read]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)
