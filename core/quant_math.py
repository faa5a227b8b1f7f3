"""FakeQuantize math and weight access in numpy, for algorithms and estimators (built-in or third-party)::

    from ovquant.quant_math import fake_quantize, fake_quantize_value, weights_of, weight_source

OpenVINO's ``FakeQuantize`` with ``levels`` levels, input range ``[il, ih]`` and output range ``[ol, oh]``
maps ``x`` to ``round((clip(x, il, ih) - il) / (ih - il) * (levels - 1)) / (levels - 1) * (oh - ol) + ol``.
"""
import numpy as np

from .graph import Graph


def fake_quantize(x: np.ndarray, low, high, levels: int, out_low=None, out_high=None) -> np.ndarray:
    """``x`` through a FakeQuantize with input range ``[low, high]`` and output range ``[out_low,
    out_high]`` (default: the input range), as OpenVINO computes it; the borders broadcast. A border
    pair with ``high <= low`` clips to ``[min, max]`` of the pair and divides by 1 instead of the width."""
    out_low = low if out_low is None else out_low
    out_high = high if out_high is None else out_high
    width = np.where(high > low, high - low, 1.0)
    shape = np.broadcast_shapes(np.shape(x), np.shape(low), np.shape(width), np.shape(out_low), np.shape(out_high))
    q = np.clip(x, np.minimum(low, high), np.maximum(low, high))   # a new array: the steps below work in place
    dtype = np.result_type(q, low, width, out_low, out_high)
    if q.shape != shape or q.dtype != dtype:
        q = np.broadcast_to(q.astype(dtype), shape).copy()
    # the same operations in the same order as round((clip(x) - low) / width * (levels - 1)) / (levels - 1) * ...
    q -= low
    q /= width
    q *= levels - 1
    np.round(q, out=q)
    q /= levels - 1
    q *= out_high - out_low
    q += out_low
    return q


def fake_quantize_value(fq, x: np.ndarray) -> np.ndarray:
    """``x`` (float64) through FakeQuantize node ``fq`` (its four range inputs must be constants)."""
    il, ih, ol, oh = (Graph.constant_value(fq.input_value(i)).astype(np.float64) for i in range(1, 5))
    return fake_quantize(np.asarray(x, np.float64), il, ih, int(fq.get_attributes()["levels"]), ol, oh)


def weight_source(node, port: int = 1):
    """The ``openvino.Output`` holding the float weight constant of ``node``'s input ``port`` (looking
    through a weight FakeQuantize), or None when that input is not a constant."""
    src = node.input_value(port)
    if src.get_node().get_type_name() == "FakeQuantize":
        src = src.get_node().input_value(0)
    return src if Graph.constant_node(src) is not None else None


def weights_of(node, port: int = 1) -> tuple:
    """``(float weights, quantized weights or None)`` of ``node``'s input ``port`` (float64): the
    constant and, when a weight FakeQuantize sits in front of it, its value through that FakeQuantize."""
    src = node.input_value(port)
    fq = src.get_node() if src.get_node().get_type_name() == "FakeQuantize" else None
    w = Graph.constant_value(fq.input_value(0) if fq is not None else src)
    if w is None:
        return None, None
    w = w.astype(np.float64)
    return w, (fake_quantize_value(fq, w) if fq is not None else None)
