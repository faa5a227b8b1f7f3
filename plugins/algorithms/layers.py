"""Layer facts the built-in algorithms share (not a plugin): which convolutions are a model's first
layers, and the mean output of a linear layer for given input means."""
import numpy as np
import openvino as ov

from ovquant.graph import Graph

#: op types that count as a model's first layer (the saturation fix's "first_layer" mode)
FIRST_LAYER_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData")


def first_layers(graph: Graph) -> set:
    """Friendly names of the first convolution(s) reachable from each model input: a walk from every
    Parameter through its consumers that stops at the first op of :data:`FIRST_LAYER_TYPES`."""
    found, seen = set(), set()
    stack = list(graph.model.get_parameters())
    while stack:
        n = stack.pop()
        if n.get_friendly_name() in seen:
            continue
        seen.add(n.get_friendly_name())
        if n.get_type_name() in FIRST_LAYER_TYPES:
            found.add(n.get_friendly_name())
            continue
        for i in range(n.get_output_size()):
            stack.extend(Graph.consumer_nodes(n.output(i)))
    return found


def mean_output(node: ov.Node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Mean output per channel of a Convolution, GroupConvolution or MatMul ``node`` with weights ``w``
    on inputs whose means are ``s``: per input channel and kernel tap ``[C, kh, kw]`` for a
    convolution (``y_o = sum_{c,i,j} w[o, c, i, j] s[c, i, j]``; per group for a GroupConvolution), per
    input feature ``[K]`` for a MatMul (``w @ s`` with ``transpose_b``, else ``s @ w``)."""
    t = node.get_type_name()
    if t == "MatMul":
        tb = node.get_attributes().get("transpose_b", False)
        w2 = w.reshape(w.shape[-2:])
        return w2 @ s if tb else s @ w2
    if t == "GroupConvolution":
        g, o, i = w.shape[:3]
        return np.einsum("goikl,gikl->go", w, s.reshape(g, i, *s.shape[1:])).reshape(-1)
    return np.einsum("ocij,cij->o", w, s)
