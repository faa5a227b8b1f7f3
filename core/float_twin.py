"""The float value of a compressed int8 (or int4) weight, from the FP32 model's constant.

An algorithm may have rescaled the weight before it was quantized (SmoothQuant stores ``W * s`` with a
scale ``s_k`` per input channel and divides the layer's input by ``s``), so the FP32 model's ``W`` is its
float value only up to that scale. With ``D`` the dequantized weight, :func:`float_value` returns ``W``
when ``||D - W|| <= TOLERANCE * ||W||`` (int8 error is about 1%), else ``W * s`` with the least-squares
scale per slice of one axis, ``s_k = <D_k, W_k> / <W_k, W_k>``, for the axis whose rescaled ``W`` is
within the tolerance of ``D`` (the smaller residual of the two), else None (the weight is not a
rescaled copy; it is then left out of the analysis)."""
from typing import Optional

import numpy as np
import openvino as ov

TOLERANCE = 0.05
#: the same for weights of 4 bits or fewer: their rounding error alone can exceed any bound (2 bits: 0.5 and
#: more), so a rescaling cannot be told from it and the FP32 constant is taken as it is
TOLERANCE_4BIT = float("inf")


def dequantized(out: ov.Output) -> Optional[np.ndarray]:
    """``Constant -> Convert -> [Subtract] -> Multiply`` evaluated in float64 (None for other ops)."""
    n = out.get_node()
    t = n.get_type_name()
    if t == "Constant":
        from .graph import Graph

        return Graph.constant_data(n).astype(np.float64)
    if t == "Convert":
        return dequantized(n.input_value(0))
    if t in ("Subtract", "Multiply"):
        a, b = dequantized(n.input_value(0)), dequantized(n.input_value(1))
        if a is None or b is None:
            return None
        return a - b if t == "Subtract" else a * b
    return None


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    den = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / den if den > 0 else float(np.linalg.norm(a))


def float_value(out: ov.Output, twin: np.ndarray, tolerance: float = TOLERANCE) -> Optional[np.ndarray]:
    """The float form of the compressed weight ``out`` given the FP32 model's constant ``twin`` (``tolerance``:
    :data:`TOLERANCE` for 8-bit weights, :data:`TOLERANCE_4BIT` for 4-bit ones)."""
    d = dequantized(out)
    if d is None or d.shape != twin.shape:
        return twin
    w = twin.astype(np.float64)
    if _rel(d, w) <= tolerance:
        return twin
    best = None
    for axis in range(w.ndim):
        other = tuple(i for i in range(w.ndim) if i != axis)
        den = (w * w).sum(axis=other, keepdims=True)
        s = np.where(den > 0, (d * w).sum(axis=other, keepdims=True) / np.where(den > 0, den, 1), 1.0)
        cand = w * s
        r = _rel(d, cand)
        if r <= tolerance and (best is None or r < best[0]):
            best = (r, cand)
    return None if best is None else best[1].astype(twin.dtype)
