"""The order in which accuracy control reverts quantizers: error per int8 work lost."""
from typing import Callable, Optional, Sequence

import numpy as np
import openvino as ov

from .sensitivity import find_quantizers, layers_reading


#: ops whose multiply-accumulates run in int8 when their quantized inputs do (the cost of a revert)
_MAC_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
            "MatMul", "LSTMSequence", "GRUSequence", "RNNSequence")


def macs(node: ov.Node) -> int:
    """Multiply-accumulates of one inference of a compute op from its static shapes (0 when a shape is
    dynamic or the op is not a compute op): ``|output| * |weight| / (weight's output channels)`` for a
    convolution (``|weight| / groups / out-per-group`` for a grouped one), ``|output| * K`` for MatMul,
    ``|weights|`` times the sequence length for a recurrent sequence op."""
    t = node.get_type_name()
    if t not in _MAC_OPS:
        return 0
    ins = [node.get_input_partial_shape(i) for i in range(node.get_input_size())]
    out = node.get_output_partial_shape(0)
    if out.is_dynamic or any(ps.is_dynamic for ps in ins[:2]):
        return 0
    o, shapes = int(np.prod(out.to_shape())), [list(ps.to_shape()) for ps in ins]
    if t in ("Convolution", "ConvolutionBackpropData"):
        return o * int(np.prod(shapes[1][1:]))
    if t in ("GroupConvolution", "GroupConvolutionBackpropData"):
        return o * int(np.prod(shapes[1][2:]))
    if t == "MatMul":
        a = shapes[0]
        k = a[-2] if node.get_attributes().get("transpose_a") and len(a) > 1 else a[-1]
        return o * int(k)
    seq = shapes[0][1] if len(shapes[0]) > 1 else 1
    return int(seq) * sum(int(np.prod(sh)) for sh in shapes[4:6] if sh)


def speed_aware_order(model: ov.Model, rows: Sequence[dict], fp32: Optional[ov.Model] = None) -> list:
    """The quantizer names of sensitivity ``rows`` ordered for reverting: by error per int8 work lost,
    ``error_i / (macs_i + eps)``, where ``macs_i`` is the multiply-accumulates of the compute ops that
    read quantizer ``i`` (through reshapes and converts; those ops run in float once it is reverted) and
    ``eps`` is 1% of the mean over quantizers (so that a free revert is not infinitely attractive);
    ties keep the error order. Reverting a prefix of this list removes about the most error for the
    least int8 work (the greedy order of a fractional knapsack)."""
    cost = {}
    for qz in find_quantizers(model, fp32):
        cost[qz["name"]] = sum(macs(n) for n in layers_reading(qz["quantized"]))
    names = [r["name"] for r in rows]
    eps = 0.01 * (sum(cost.get(n, 0) for n in names) / max(1, len(names))) or 1.0
    err = {r["name"]: float(r["error"]) for r in rows}
    order = sorted(range(len(names)), key=lambda i: (-err[names[i]] / (cost.get(names[i], 0) + eps), i))
    return [names[i] for i in order]


def guided_fewest(n: int, drop: Callable[[int], float], error: Callable[[int], float], max_drop: float,
                  drop_0: float, tol: float = 1e-9) -> tuple:
    """Smallest ``k`` in ``[0, n]`` with ``drop(k) <= max_drop`` (validated; ``drop(0) = drop_0`` fails,
    ``k = n`` is FP32 and passes with drop 0), probing where the label-free ``error(k)`` (cheap, the
    sensitivity switch model's output error with the top ``k`` reverted) predicts the drop to meet
    ``max_drop``. With ``lo`` the largest failing and ``hi`` the smallest passing ``k`` known, the drop
    is interpolated linearly in the error between them,

        e* = e(hi) + (max_drop - d(hi)) * (e(lo) - e(hi)) / (d(lo) - d(hi)),

    and the next probe is the first ``k`` in ``(lo, hi)`` with ``e(k) <= e*`` (found by bisection, taking
    ``e`` as non-increasing in ``k``). A probe that does not halve the interval makes the next one a
    plain bisection, so at most about twice ``log2(n)`` validations are made; fewer when the error
    predicts the drop. Returns ``(k, {k: drop} of the validations made)``."""
    known = {0: float(drop_0), n: 0.0}
    errs: dict = {}

    def e(k: int) -> float:
        if k not in errs:
            errs[k] = 0.0 if k >= n else float(error(k))
        return errs[k]

    lo, hi, bisect_next = 0, n, False
    while hi - lo > 1:
        k = (lo + hi) // 2
        d_lo, d_hi = known[lo], known[hi]
        if not bisect_next and e(lo) > e(hi) and d_lo > d_hi:
            target = e(hi) + (max_drop - d_hi) * (e(lo) - e(hi)) / (d_lo - d_hi)
            a, b = lo, hi                      # e(a) > target >= ... find the first k with e(k) <= target
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (a, mid) if e(mid) <= target else (mid, b)
            k = b if b < hi else hi - 1
        width = hi - lo
        known[k] = float(drop(k))
        lo, hi = (lo, k) if known[k] <= max_drop + tol else (k, hi)
        bisect_next = (hi - lo) > width / 2
    return hi, {k: v for k, v in known.items() if 0 < k < n}
