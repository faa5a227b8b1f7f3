"""Helpers shared by the built-in algorithms (not a plugin)."""
from typing import Optional

import numpy as np
import openvino as ov

CONV_TYPES = ("Convolution", "GroupConvolution")


def conv_geometry(node: ov.Node) -> Optional[dict]:
    """Kernel, strides, dilations, pads and output size of a 2-D (group) convolution, or None."""
    if node.get_type_name() not in CONV_TYPES:
        return None
    w = node.input_value(1).get_partial_shape()
    out = node.output(0).get_partial_shape()
    if not w.is_static or out.rank.is_dynamic or out.rank.get_length() != 4:
        return None
    a = node.get_attributes()
    wshape = list(w.to_shape())
    x = node.input_value(0).get_partial_shape()
    static = x.is_static and out.is_static   # sizes unknown with dynamic shapes: no padding geometry
    return {"kernel": tuple(wshape[-2:]), "strides": tuple(a["strides"]), "dilations": tuple(a["dilations"]),
            "pads_begin": tuple(a["pads_begin"]), "output": tuple(list(out.to_shape())[2:]) if static else None,
            "input": tuple(list(x.to_shape())[2:]) if static else None}


def layer_input(node: ov.Node) -> ov.Output:
    """The activation feeding a layer, looking through an activation FakeQuantize."""
    src = node.input_value(0)
    if src.get_node().get_type_name() == "FakeQuantize":
        src = src.get_node().input_value(0)
    return src


def tap_coverage(geo: dict) -> np.ndarray:
    """[kh, kw]: the fraction of output positions at which each kernel tap reads inside the input
    (not the zero padding); 1 everywhere for a convolution without padding."""
    if geo.get("input") is None or geo.get("output") is None:
        return np.ones(geo["kernel"])   # dynamic shapes: padding effects unknown

    def axis(size, out, k, stride, pad, dil):
        rows = np.arange(out)[None, :] * stride + np.arange(k)[:, None] * dil - pad
        return ((rows >= 0) & (rows < size)).mean(axis=1)
    return np.outer(*(axis(geo["input"][a], geo["output"][a], geo["kernel"][a], geo["strides"][a],
                           geo["pads_begin"][a], geo["dilations"][a]) for a in (0, 1)))
