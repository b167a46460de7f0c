"""FP16 as a GPU runs it, emulated on the CPU: FP32 arithmetic, every FP16 tensor rounded to FP16 where it is stored.

ONNX Runtime's CPU provider has no FP16 kernel for many ops (Add, Mul, Gather, ...). It runs them in FP32
behind casts it inserts, and then drops the FP32 -> FP16 -> FP32 pairs between such ops, so an FP16 graph
on the CPU keeps some values in FP32 that a GPU stores in FP16: an embedding sum of 90000 stays finite on
the CPU and is Inf on the GPU. Judging policies that way would pass policies that break on the GPU.

:func:`fp16_emulation` rewrites a mixed-precision graph so every op computes in FP32 and each tensor the graph
types FP16 is rounded through an explicit ``Cast(FP16) -> Cast(FP32)`` pair that ONNX Runtime keeps: values
past 65504 become Inf and every stored value carries FP16's rounding, as with the GPU's FP16 kernels, which
compute in FP32 registers (MatMul accumulates in FP32) and round where they write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.precision.probe import FLOAT, FLOAT16, tensor_types

if TYPE_CHECKING:
    import onnx

# Suffix of a node's unrounded FP32 result in an emulated graph; the rounded value keeps the original name.
RAW_SUFFIX = "__fp32_raw"


def fp16_emulation(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in FP32 with FP16 storage rounding (see module doc); FP32 graphs come back
    unchanged in value. Tensor names are kept: a name that held an FP16 value holds its FP32-typed copy."""
    import onnx as onnx_module
    from onnx import helper

    copy = onnx_module.ModelProto()
    copy.CopyFrom(model)
    types = tensor_types(copy)
    graph = copy.graph
    _widen_initializers(graph)
    nodes: list[onnx.NodeProto] = []
    for original in graph.node:
        node = onnx_module.NodeProto()
        node.CopyFrom(original)
        _widen_attributes(node)
        nodes.append(node)
        if node.op_type == "Cast" and _cast_target(node) == FLOAT16:
            target = node.output[0]
            node.output[0] = f"{target}__fp16"
            nodes.append(helper.make_node("Cast", [node.output[0]], [target], name=f"{target}__round32", to=FLOAT))
            continue
        for index, name in enumerate(node.output):
            if types.get(name) == FLOAT16 and node.op_type != "Constant":
                node.output[index] = name + RAW_SUFFIX
                nodes += _rounding(node.output[index], name)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    for info in [*graph.input, *graph.output]:
        if info.type.tensor_type.elem_type == FLOAT16:
            info.type.tensor_type.elem_type = FLOAT
    return copy


def _rounding(source: str, target: str) -> list[onnx.NodeProto]:
    """``Cast(FP16)`` then ``Cast(FP32)`` from ``source`` to ``target``: FP16's rounding and range, FP32's type."""
    from onnx import helper

    half = f"{target}__fp16"
    return [
        helper.make_node("Cast", [source], [half], name=f"{target}__round16", to=FLOAT16),
        helper.make_node("Cast", [half], [target], name=f"{target}__round32", to=FLOAT),
    ]


def _cast_target(node: onnx.NodeProto) -> int | None:
    return next((attribute.i for attribute in node.attribute if attribute.name == "to"), None)


def _widen_initializers(graph: onnx.GraphProto) -> None:
    """FP16 weights become FP32 weights of the same (FP16-exact) values."""
    from onnx import numpy_helper

    for index, init in enumerate(graph.initializer):
        if init.data_type == FLOAT16:
            widened = numpy_helper.from_array(numpy_helper.to_array(init).astype("float32"), init.name)
            graph.initializer[index].CopyFrom(widened)


def _widen_attributes(node: onnx.NodeProto) -> None:
    """FP16 tensors in attributes (Constant, ConstantOfShape values) become FP32 of the same values."""
    from onnx import numpy_helper

    for attribute in node.attribute:
        if attribute.HasField("t") and attribute.t.data_type == FLOAT16:
            attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype("float32"), attribute.t.name))
