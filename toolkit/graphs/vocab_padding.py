"""Pad a language model's vocabulary projection to a multiple of 64 columns, for GPU GEMM kernels.

GPT-2's vocabulary has 50257 entries, an odd number. Its LM-head weight ``[hidden, 50257]`` and the logits it
writes then have rows whose stride is not a multiple of 16 bytes in FP16. cuBLAS's fast Hopper kernels need
16-byte-aligned strides for every operand, so this one GEMM, the largest of the model at long sequences,
falls back to slower ones. Zero columns up to the next multiple of 64 (50304) align it; a ``Slice`` then
gives the logits their true width. Nothing after the ``Slice`` sees the extra columns, so the graph's
outputs are unchanged. nanoGPT pads GPT-2's vocabulary to 50304 for the same reason. On an H100 it made GPT-2's
FP16 engine 1.11x faster at batch 1, length 128 and 1.27x at batch 32, length 512 (``results/h100/NOTES.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.graphs import tensor_readers

if TYPE_CHECKING:
    import onnx

PADDED_SUFFIX = "__vocab_padded"


def pad_vocab_projection(model: onnx.ModelProto, multiple: int = 64, min_columns: int = 1024) -> int:
    """Pad (in place) every graph output made by ``MatMul(x, W)`` with a 2-D weight ``W`` of at least
    ``min_columns`` columns whose count is not a multiple of ``multiple``; returns how many were padded.

    Only a projection that writes a graph output is padded: its width is then the output's, and the
    ``Slice`` restores it. Hidden-size projections (multiples of 64 in every model we build) are left alone.
    """
    import numpy as np
    import onnx as onnx_module
    from onnx import numpy_helper

    graph = model.graph
    outputs = {output.name for output in graph.output}
    weights = {init.name: init for init in graph.initializer}
    readers = tensor_readers(graph)
    padded = 0
    for index, node in reversed(list(enumerate(graph.node))):  # reversed: inserting keeps earlier indices valid
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or node.output[0] not in outputs or len(weight.dims) != 2:
            continue
        rows, columns = weight.dims
        if columns < min_columns or columns % multiple == 0:
            continue
        values = numpy_helper.to_array(weight)
        wide = np.zeros((rows, -(-columns // multiple) * multiple), dtype=values.dtype)
        wide[:, :columns] = values
        wide_name = f"{weight.name}{PADDED_SUFFIX}"
        graph.initializer.append(numpy_helper.from_array(wide, wide_name))
        if len(readers.get(weight.name, [])) == 1:  # no other reader: the narrow copy would only take memory
            graph.initializer.remove(weight)
        target = node.output[0]
        node.input[1] = wide_name
        node.output[0] = f"{target}{PADDED_SUFFIX}"
        bounds = [
            numpy_helper.from_array(np.array([value], dtype=np.int64), f"{target}{PADDED_SUFFIX}_{label}")
            for label, value in (("start", 0), ("end", columns), ("axis", -1))
        ]
        graph.initializer.extend(bounds)
        cut = onnx_module.helper.make_node(
            "Slice", [node.output[0], *(b.name for b in bounds)], [target], name=f"{node.name or target}_vocab_slice"
        )
        graph.node.insert(index + 1, cut)
        padded += 1
    return padded


def unpad_vocab_projection(model: onnx.ModelProto) -> int:
    """Undo :func:`pad_vocab_projection` (in place), in FP32 or after a precision conversion: each padded
    weight is cut back to the ``Slice``'s width and the ``Slice`` goes. For measuring what padding buys."""
    from onnx import numpy_helper

    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    weights = {init.name: init for init in graph.initializer}
    undone = 0
    for cut in [node for node in graph.node if node.op_type == "Slice" and node.input[0].endswith(PADDED_SUFFIX)]:
        matmul = producers.get(cut.input[0])
        end = weights.get(cut.input[2])
        if matmul is None or matmul.op_type != "MatMul" or end is None:
            continue
        # The converter may have put a Cast between the weight and the MatMul: follow it to the initializer.
        weight_input = matmul.input[1]
        cast = producers.get(weight_input)
        weight = weights.get(cast.input[0] if cast is not None and cast.op_type == "Cast" else weight_input)
        if weight is None:
            continue
        columns = int(numpy_helper.to_array(end).reshape(-1)[0])
        narrow = numpy_helper.from_array(numpy_helper.to_array(weight)[:, :columns].copy(), weight.name)
        weight.CopyFrom(narrow)
        matmul.output[0] = cut.output[0]
        graph.node.remove(cut)
        undone += 1
    return undone
