"""Recurrent sequence ops (LSTMSequence, GRUSequence, RNNSequence) in models that tools edit: the CPU plugin
takes their weights (W, R, B) as Constants only, whenever it runs the op in f32 (its int8 kernel is
the only one that reads a decompression subgraph)."""
from typing import Optional

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .float_twin import dequantized
from .graph import Graph

SEQUENCE_OPS = ("LSTMSequence", "GRUSequence", "RNNSequence")


def feeds_sequence_weights(qz: dict) -> bool:
    """Whether a weight quantizer feeds a recurrent sequence op (whose weights cannot be switched)."""
    return qz["kind"] != "activations" and any(r.get_node().get_type_name() in SEQUENCE_OPS
                                               for r in qz["quantized"].get_target_inputs())


def constant_weights(op: ov.Node, twin: Optional[ov.Node] = None) -> None:
    """Replace every input of ``op`` that is a decompression subgraph (int8 Constant, Convert, Multiply) by a
    Constant, in place: the FP32 value where ``twin`` (the op in the FP32 model) has a Constant of the same
    shape on that port, else the dequantized value."""
    for port in range(op.get_input_size()):
        src = op.input_value(port)
        if Graph.constant_node(src) is not None:
            continue
        v = dequantized(src)
        if v is None:
            continue
        ref = Graph.constant_value(twin.input_value(port)) if twin is not None and port < twin.get_input_size() else None
        if ref is not None and tuple(ref.shape) == tuple(v.shape):
            v = ref
        op.input(port).replace_source_output(ops.constant(np.asarray(v).astype(src.get_element_type().to_dtype())).output(0))


def constant_sequence_weights(model: ov.Model) -> None:
    """:func:`constant_weights` of every recurrent sequence op of ``model`` (the sensitivity's switch model:
    with its inputs switched the op runs in f32; those weights stay quantized in every configuration)."""
    for op in model.get_ordered_ops():
        if op.get_type_name() in SEQUENCE_OPS:
            constant_weights(op)
