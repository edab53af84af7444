"""W8A16 weights in an ONNX graph as QDQ: int8 initializer -> ``DequantizeLinear`` -> Conv/MatMul.

This is the form NPU toolchains (Qualcomm QNN, Samsung ENN) and onnxruntime's QDQ optimizer read
as "int8 weights": the int8 values and per-output-channel scales are exactly those of
:func:`edgefusion.quant.w8a16.quantize_weight`, so the ONNX model and the torch W8A16 model round
the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgefusion.export.layout import save_onnx
from edgefusion.quant.w8a16 import W8A16Config, quantize_weight


def _output_axis(node) -> int | None:
    """Axis of the weight (input 1) that indexes output channels, or None if not a weight op."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "MatMul":  # the exporter stores Linear weights transposed: (in, out)
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return None


def quantize_onnx_weights(file: Path, config: W8A16Config, prefix: str = "") -> int:
    """Rewrite the float weights of every Conv, MatMul and Gemm in ``file`` as int8 QDQ, in place,
    except initializers named ``<prefix><skip>.weight`` for ``skip`` in ``config.skip`` (``prefix``:
    the exported wrapper's attribute path to the model). Returns the count."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(file))
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    skipped = {f"{prefix}{name}.weight" for name in config.skip}
    dequantized: dict[str, str] = {}
    new_nodes = []
    for node in graph.node:
        axis = _output_axis(node)
        if axis is None or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        name = node.input[1]
        init = initializers[name]
        if name in skipped or init.data_type != TensorProto.FLOAT or len(init.dims) < 2:
            continue
        if name not in dequantized:
            weight = torch.from_numpy(numpy_helper.to_array(init).copy())
            q, scale = quantize_weight(weight.movedim(axis, 0))
            q = q.movedim(0, axis).numpy()
            graph.initializer.extend(
                [
                    numpy_helper.from_array(q, f"{name}_int8"),
                    numpy_helper.from_array(scale.numpy().astype(np.float32), f"{name}_scale"),
                    numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point"),
                ]
            )
            dequantized[name] = f"{name}_dequantized"
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                    [dequantized[name]],
                    name=f"{name}_DequantizeLinear",
                    axis=axis,
                )
            )
        node.input[1] = dequantized[name]
    still_used = {i for node in graph.node for i in node.input}
    for name in dequantized:
        if name not in still_used:
            graph.initializer.remove(initializers[name])
    for node in reversed(new_nodes):
        graph.node.insert(0, node)  # DequantizeLinear reads only initializers: first is topological
    save_onnx(proto, file)
    return len(dequantized)
