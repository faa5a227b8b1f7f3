"""The saturation fix of MinMaxQuantization's weights (``saturation_fix``), and its ``"measured"`` mode:
weight grids that cannot overflow int16 pair sums, per output channel, from the activations' maxima.

``first_layer`` (POT's and NNCF's) and ``all`` give the weights of the first layers, or of every
Convolution, GroupConvolution, ConvolutionBackpropData and MatMul, a 7-bit grid inside the 8-bit levels:
the range is widened by ``(L - 1) / (h - 1)`` with ``h`` half the levels ``L`` (254/126 for 255 levels),
so that only ``[-63, 63]`` is used. Grids of at most 128 levels are left as they are (halved again, most
weights would round to 0).

Without VNNI (AVX2, AVX-512 before VNNI) oneDNN's int8 convolutions and matrix products (``jit_avx2_I8``,
``jit_avx2_1x1_I8``, ``jit_gemm_I8``) multiply u8 activations ``a`` by s8 weights ``q`` with
``vpmaddubsw``, which adds the products of two neighbouring input channels ``2p`` and ``2p + 1`` at one
kernel tap and saturates the sum at int16: ``sat16(a[2p] q[o, 2p] + a[2p+1] q[o, 2p+1])``; a group
convolution pairs the channels of each group so. Signed int8 activations are shifted by +128 first
(``a = x_q + 128``). A depthwise convolution (one input channel per group) and a layer with one input
channel have no pairs. (Measured with ``ONEDNN_MAX_CPU_ISA=AVX2``:
tests/test_saturation.py.)

With ``a >= 0``, a pair can leave int16 only when both weights have one sign, and then by at most
``A[2p] |q[o, 2p]| + A[2p+1] |q[o, 2p+1]|``, ``A[c]`` the largest ``a`` of input channel ``c``. So per output
channel ``o`` of a weighted layer, with the 8-bit grid's integers ``q = round(w / s_o)`` (``s_o = hi_o / 127``):

    R_o = max over pairs p and taps t with sign(q[o, 2p, t]) = sign(q[o, 2p+1, t]) of
          A[2p] |q[o, 2p, t]| + A[2p+1] |q[o, 2p+1, t]|

The channel keeps the 8-bit grid when ``R_o <= 32767 - 255`` (one integer step of margin: a rounding tie
broken the other way by the runtime changes one ``|q|`` by 1). Otherwise its range is widened by the
smallest factor ``f_o`` (from ``R_o / 32512`` up in steps of 2%) for which ``R_o`` of the integers
``round(w / (f_o s_o))`` is at most 32512, and at most by the 7-bit grid's factor (``"all"``), whose
integers (``|q| <= 63``) cannot overflow whatever the activations.

``A[c]`` comes from the calibration data: ``M[c]``, the max over every calibration sample and position of
channel ``c`` of the layer's input, on the activation quantizer's grid (``zp + M[c] / scale``), with the part
above the zero point times ``MARGIN`` for inputs beyond the calibration maxima (and divided by the smallest
range factor of ActivationRangeChoice where that step may narrow the ranges later), rounded up and at most 255.
LayerwiseTuning and FirstLayerRounding round the weights they tune anew (GPTQ moves integers by more than
a step), so in this mode the layers they will tune get the 7-bit grid, as with ``"all"``.

Where it is not known (the input's quantizer is not right before the layer, its tensor is changed per
channel by an earlier algorithm of the stage, or the layer is a ConvolutionBackpropData) ``A = 255``
(every channel) for Convolution and MatMul, and the 7-bit grid for the rest.
"""
from typing import Optional

import numpy as np

from ovquant.graph import Graph
from ovquant.plugins.algorithms.params import saturation_mode
from ovquant.statistics import Statistic, TensorRef

from . import range_choice
from .layers import FIRST_LAYER_TYPES, first_layers

#: the largest int16
LIMIT = 32767
#: the largest pair sum a channel may reach on its estimated integers: one integer step (times 255) below
#: LIMIT, so that a rounding tie the runtime breaks the other way cannot overflow
SAFE = LIMIT - 255
#: the part of a channel's calibration max above the zero point is taken this much larger
MARGIN = 1.25
#: the layer types whose pairs are measured (others get the 7-bit grid)
MEASURED = ("Convolution", "GroupConvolution", "MatMul")
#: weight grids with at most this many levels get no saturation fix
MIN_LEVELS = 128


def measured(params) -> bool:
    """Whether the run's saturation fix is ``"measured"`` (set, or what ``"auto"`` chose on this host)."""
    return saturation_mode(params)[0] == "measured"


def fixed_layers(mm, graph: Graph) -> dict:
    """``{layer name: measured}`` for the layers whose weights get the fix: ``measured`` is True where the
    ``"measured"`` mode widens per channel, False where the 7-bit grid applies (the other modes, and in
    ``"measured"`` mode the layers LayerwiseTuning or FirstLayerRounding will round anew)."""
    mode = saturation_mode(mm.params)[0]
    if mode == "no" or not mm.context.target.saturation_fix:
        return {}
    if mode == "first_layer":   # an If body's first layers are not the network's (context.body)
        names = (set() if mm.context.body else first_layers(graph)) | mm.context.transforms.saturation_fix_layers()
        return dict.fromkeys(names, False)
    names = {n.get_friendly_name() for n in graph.nodes() if n.get_type_name() in FIRST_LAYER_TYPES + ("MatMul",)}
    if mode != "measured" or getattr(mm.params, "use_layerwise_tuning", False):
        return dict.fromkeys(names, False)
    tuned = first_layers(graph) if getattr(mm.params, "first_layer_rounding", False) else set()
    return {n: n not in tuned for n in names}


def seven_bit_factor(levels: int) -> float:
    """How much the 7-bit grid widens a range of ``levels`` levels (1 for grids of at most MIN_LEVELS)."""
    if levels <= MIN_LEVELS:
        return 1.0
    half = levels // 2 + (levels % 2) - 1 if levels % 2 else levels // 2
    return (levels - 1) / (half - 1)


def fix(mm, q, node, lo, hi, stats, per_channel: bool) -> tuple:
    """``(lo, hi, channels widened)`` of weight quantizer ``q`` of ``node``, a layer that gets the fix:
    widened per channel (``per_channel``, from :func:`fixed_layers`) or on the 7-bit grid."""
    full = seven_bit_factor(q.scheme.levels)
    if full == 1.0:
        return lo, hi, 0
    if not per_channel:
        return lo * full, hi * full, int(np.size(hi))
    w = Graph.constant_value(node.input_value(q.source[1])).astype(np.float64)
    return widen(mm, node, w, lo, hi, q.scheme.levels, stats, full)


def data_axis(node) -> Optional[int]:
    """The channel axis of ``node``'s data input (input 0) that its int8 kernel pairs, or None."""
    rank = node.input(0).get_partial_shape().rank
    if not rank.is_static:
        return None
    r = rank.get_length()
    if node.get_type_name() == "MatMul":
        return r - 2 if node.get_attributes().get("transpose_a", False) else r - 1
    return 1 if node.get_type_name() in MEASURED else None


def requested(mm, graph: Graph) -> list:
    """The per-channel max statistics of the inputs of ``mm``'s weighted layers (``mm.saturation_stats``:
    layer name -> Statistic); empty unless the run's mode is ``"measured"``."""
    mm.saturation_stats = {}
    if not measured(mm.params) or not mm.context.target.saturation_fix:
        return []
    weighted = {q.source[0] for q in mm.quantizers if q.kind == "weights"}
    for q in mm.quantizers:
        if q.kind != "activations":
            continue
        src = graph.node(q.source[0]).output(q.source[1])
        for name, port in q.inputs:
            node = graph.node(name)
            if port != 0 or name not in weighted or node.get_type_name() not in MEASURED:
                continue
            axis = data_axis(node)
            if axis is not None and node.input_value(0) == src:
                mm.saturation_stats[name] = Statistic.make(TensorRef(*q.source), "max", "max", axis)
    return list(mm.saturation_stats.values())


def _input_quantizer(node):
    """(lo, hi, levels) of the FakeQuantize that feeds ``node``'s data input, or None."""
    fq = node.input_value(0).get_node()
    if fq.get_type_name() != "FakeQuantize":
        return None
    lo, hi = (Graph.constant_value(fq.input_value(i)) for i in (1, 2))
    if lo is None or hi is None:
        return None
    return np.asarray(lo, np.float64).ravel(), np.asarray(hi, np.float64).ravel(), int(fq.get_attributes()["levels"])


def activation_maxima(mm, node, stats) -> Optional[np.ndarray]:
    """``A[c]``: the largest u8 value of each input channel of ``node`` (module docstring), or None."""
    st = getattr(mm, "saturation_stats", {}).get(node.get_friendly_name())
    fq = _input_quantizer(node)
    if st is None or fq is None or st not in stats or mm.context.transforms.get(st.tensor) is not None:
        return None
    m = np.asarray(stats[st], np.float64)
    c = m.shape[-1] if m.ndim else 1
    m = m.reshape(-1, c).max(axis=0)   # a sample with a batch of several rows: the max over them
    lo, hi, levels = fq
    if lo.size not in (1, m.size) or hi.size not in (1, m.size) or not np.all(np.isfinite(m)):
        return None
    scale = (hi - lo) / (levels - 1)
    zp = -lo / scale
    above = m / scale
    margin = MARGIN / (min(range_choice.FACTORS) if range_choice.enabled(mm.params) else 1.0)
    a = zp + np.where(above > 0, above * margin, above)
    return np.clip(np.ceil(a), 0, 255)


def _pair_risk(q: np.ndarray, a: np.ndarray, axis: int, keep: tuple) -> np.ndarray:
    """``R_o`` per kept index: ``q`` integers with the paired axis ``axis``, ``a`` broadcastable to it."""
    v = np.moveaxis(np.abs(q) * a, axis, -1)
    s = np.moveaxis(np.sign(q), axis, -1)
    if v.shape[-1] % 2:
        v = np.concatenate([v, np.zeros(v.shape[:-1] + (1,))], -1)
        s = np.concatenate([s, np.zeros(s.shape[:-1] + (1,))], -1)
    v0, v1, same = v[..., 0::2], v[..., 1::2], s[..., 0::2] * s[..., 1::2] > 0
    risk = np.moveaxis(np.where(same, v0 + v1, np.maximum(v0, v1)), -1, axis)
    return risk.max(axis=tuple(i for i in range(q.ndim) if i not in keep), keepdims=True)


def _layout(node, w: np.ndarray, a: Optional[np.ndarray]):
    """(paired axis of the weights, ``A`` shaped to broadcast against them), or None (no pairs)."""
    t = node.get_type_name()
    if t == "GroupConvolution":
        if w.shape[2] == 1:
            return None                       # depthwise: one input channel per group
        axis = 2
        shape = [1] * w.ndim
        shape[0], shape[2] = w.shape[0], w.shape[2]
        a = np.full(shape, 255.0) if a is None or a.size != w.shape[0] * w.shape[2] else a.reshape(shape)
        return axis, a
    if t == "MatMul":
        if w.ndim != 2:
            return 0, np.full((1,) * w.ndim, 255.0)
        axis = 1 if node.get_attributes().get("transpose_b", False) else 0
    else:
        axis = 1
    if w.shape[axis] == 1:
        return None
    shape = [1] * w.ndim
    shape[axis] = w.shape[axis]
    a = np.full(shape, 255.0) if a is None or a.size != w.shape[axis] else a.reshape(shape)
    return axis, a


def widen(mm, node, w: np.ndarray, lo, hi, levels: int, stats, full: float) -> tuple:
    """``(lo, hi, channels widened)``: the weight range of ``node`` with each output channel widened by its
    ``f_o`` (module docstring); ``full`` is the 7-bit grid's factor."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    symmetric = np.allclose(-lo, hi) or np.allclose(-lo, hi * levels / max(levels - 2, 1))
    if node.get_type_name() not in MEASURED or not symmetric or levels < 255:
        return lo * full, hi * full, int(hi.size)
    layout = _layout(node, w, activation_maxima(mm, node, stats))
    if layout is None:
        return lo, hi, 0
    axis, a = layout
    hi_b = np.broadcast_to(hi, w.shape) if hi.ndim == w.ndim else np.broadcast_to(hi.reshape(-1), w.shape)
    keep = tuple(i for i in range(w.ndim) if hi.ndim == w.ndim and hi.shape[i] > 1)
    scale = hi_b / 127.0
    f = np.maximum(1.0, _pair_risk(np.round(w / scale), a, axis, keep) / SAFE)
    for _ in range(60):
        risk = _pair_risk(np.round(w / (scale * f)), a, axis, keep)
        bad = (risk > SAFE) & (f < full)
        if not bad.any():
            break
        f = np.where(bad, np.minimum(f * 1.02, full), f)
    f = np.minimum(f, full)
    f = f.reshape(hi.shape) if hi.ndim == w.ndim else np.full(hi.shape, float(f.max()))
    return lo * f, hi * f, int((f > 1).sum())
