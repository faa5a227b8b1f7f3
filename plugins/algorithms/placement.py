"""Where MinMaxQuantization puts FakeQuantize ops (the placement rules of POT and NNCF).

1. Every op the hardware target lists with activation schemes gets a quantizer request on each float,
   non-constant input port (``ports`` limits them); ops with weight schemes get a weight quantizer on
   their constant input. Element-wise ops with fewer than two activation inputs (a bias Add, a
   scale-shift Multiply) are part of a fused pattern and get none.
2. Requests on the same producer output are served by one quantizer.
3. A quantizer moves up through quantization-agnostic ops (MaxPool, Reshape, Transpose, Concat, ...)
   when every consumer of that op's output asked for one; through a Concat it splits into one
   quantizer per input, all sharing one scale.
4. Integer tensors, constants, and ignored ops are never quantized; quantizers do not move through
   ignored ops.
"""
import re
from typing import Optional

import attrs
import numpy as np
import openvino as ov

from ovquant.errors import ConfigError, HardwareTargetError
from ovquant.graph import Graph, _attr_matches, is_nonnegative, type_of
from ovquant.hwtarget import Scheme

WEIGHTED = {"Convolution", "GroupConvolution", "DepthwiseConvolution", "ConvolutionBackpropData", "MatMul", "Gather",
            "LSTMSequence", "GRUSequence"}
ELEMENTWISE = {"Add", "Multiply", "Subtract", "Divide", "Maximum", "Minimum", "FloorMod", "Power",
               "SquaredDifference", "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual"}
FLOAT_TYPES = {ov.Type.f32, ov.Type.f16, ov.Type.bf16, ov.Type.f64}


@attrs.define
class Quantizer:
    """One FakeQuantize to insert: on ``source`` (node name, output port), serving ``inputs``."""

    kind: str                       # "activations" or "weights"
    source: tuple                   # (node name, output port)
    inputs: list                    # [(consumer name, input port), ...]
    scheme: Scheme
    candidates: tuple = ()
    channel_axis: Optional[int] = None
    group: Optional[int] = None     # unified-scale group id (Concat inputs)
    name: str = ""
    nonnegative: bool = False       # the tensor is >= 0 by construction (after ReLU, Sigmoid, ...)

    @property
    def consumers(self) -> list:
        return [n for n, _ in self.inputs]


#: embedding tables (constant Gather data) smaller than this stay float: position and token-type tables
#: are read by every token, so their error costs accuracy, while the size gain is in the vocabulary table
MIN_TABLE_ELEMENTS = 1 << 20


def _elements(out: ov.Output) -> int:
    ps = out.get_partial_shape()
    return int(np.prod(list(ps.to_shape()))) if ps.is_static else 0


def _const_subgraph(out: ov.Output, depth: int = 4) -> bool:
    """A constant, or what decompresses one (Convert, Subtract, Multiply, Reshape of constants): the
    int8 weights of an already-quantized model; or a small constant-only subgraph (Add, Divide, Concat,
    ...: it folds away, so its output is no activation to quantize)."""
    n = out.get_node()
    if n.get_type_name() == "Constant":
        return True
    if depth == 0 or n.get_type_name() not in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze",
                                               "Add", "Divide", "Concat", "Squeeze", "Broadcast"):
        return False
    return all(_const_subgraph(n.input_value(i), depth - 1) for i in range(n.get_input_size()))


def _quantized(out: ov.Output) -> bool:
    """Already quantized: the output of a FakeQuantize, or decompressed int8 constants."""
    return out.get_node().get_type_name() == "FakeQuantize" or (
        Graph.constant_node(out) is None and _const_subgraph(out))


def _is_float(out: ov.Output) -> bool:
    return out.get_element_type() in FLOAT_TYPES


def _rule_for(target, node):
    t = type_of(node)
    for rule in target.rules(t):
        if rule.attributes:
            have = node.get_attributes()
            if not all(k in have and _attr_matches(have[k], v) for k, v in rule.attributes):
                continue
        return t, rule
    return t, None


def resolve_ignored(graph: Graph, ignored, extra_types=()) -> tuple:
    """(set of ignored node names, list of config entries that matched nothing).

    A scope entry matches a node name exactly, or as a regular expression matching the whole name.
    An operations entry matches the op type (virtual types included) and every given attribute.
    """
    names = {n.get_friendly_name() for n in graph.nodes()}
    out, unmatched = set(), []
    for i, s in enumerate(ignored.scope):
        hits = {s} & names
        if not hits:
            try:
                pat = re.compile(s)
            except re.error:
                pat = None
            if pat is not None:
                hits = {n for n in names if pat.fullmatch(n)}
        if not hits:
            unmatched.append(f"ignored.scope[{i}] {s!r}")
        out |= hits
    for i, op in enumerate(ignored.operations):
        hits = {n.get_friendly_name() for n in graph.find(types=op.type, attributes=op.attributes or None)}
        if not hits:
            unmatched.append(f"ignored.operations[{i}] type {op.type!r}" + (f" with {op.attributes}" if op.attributes else ""))
        out |= hits
    for t in extra_types:
        out |= {n.get_friendly_name() for n in graph.find(types=t)}
    return out, unmatched


def fits(req: dict, s: Scheme) -> bool:
    """Whether a user-requested scheme (partial dict) runs on candidate ``s``: fewer bits or levels fit,
    per-tensor fits per-channel, symmetric fits asymmetric."""
    if req.get("bits") is not None and req["bits"] > s.bits:
        return False
    if req.get("mode") == "asymmetric" and s.mode == "symmetric":
        return False
    if req.get("granularity") == "perchannel" and s.granularity == "pertensor":
        return False
    lo, hi = req.get("level_low"), req.get("level_high")
    if lo is not None and hi is not None and hi - lo + 1 > s.levels:
        return False
    return True


def pot_level_defaults(req: dict, kind: str, bits: int, mode: str) -> tuple:
    """(level_low, level_high) of a request: when only one is given, the other is POT's default
    (``level_low`` -2^(bits-1), +1 for symmetric weights; ``level_high`` 2^(bits-1)-1); neither: (None, None)."""
    lo, hi = req.get("level_low"), req.get("level_high")
    if lo is None and hi is None:
        return None, None
    if lo is None:
        lo = -2 ** (bits - 1) + (1 if kind == "weights" and mode == "symmetric" else 0)
    if hi is None:
        hi = 2 ** (bits - 1) - 1
    return lo, hi


def target_preset(target, preset: str) -> str:
    """The preset a target runs for ``preset``: its ``preset_aliases`` (POT's per-device renaming, e.g.
    ``accuracy`` is ``mixed`` on CPU and GPU), after POT's ``symmetric``/``asymmetric`` spellings."""
    preset = {"symmetric": "performance", "asymmetric": "accuracy"}.get(preset, preset)
    return dict(getattr(target, "preset_aliases", ())).get(preset, preset)


def choose(candidates, preset: str, kind: str, req: dict, where: str) -> Scheme:
    """Pick the scheme: the preset's candidate (performance: first; mixed: last for activations;
    accuracy: last), then the user's overrides, checked against what the target allows."""
    if not candidates:
        raise HardwareTargetError(f"{where}: the target allows no {kind} scheme")
    last = preset == "accuracy" or (preset == "mixed" and kind == "activations")
    order = list(reversed(candidates)) if last else list(candidates)
    if not any(v is not None for v in req.values()):
        return order[0]
    # prefer a candidate that matches the request exactly, else one the request fits into
    exact = [s for s in order if all(req.get(k) in (None, getattr(s, k)) for k in ("bits", "mode", "granularity"))]
    pool = exact or [s for s in order if fits(req, s)]
    if not pool:
        want = ", ".join(f"{k}={v}" for k, v in req.items() if v is not None)
        allowed = "; ".join(s.describe() for s in candidates)
        raise HardwareTargetError(f"{where}: {kind} scheme ({want}) is not allowed by the target (allowed: {allowed})")
    base = pool[0]
    lo, hi = pot_level_defaults(req, kind, req.get("bits") or base.bits, req.get("mode") or base.mode)
    return Scheme(bits=req.get("bits") or base.bits, mode=req.get("mode") or base.mode,
                  granularity=req.get("granularity") or base.granularity,
                  level_low=lo if lo is not None else (base.level_low if not req.get("bits") or req["bits"] == base.bits else None),
                  level_high=hi if hi is not None else (base.level_high if not req.get("bits") or req["bits"] == base.bits else None),
                  unified_zeropoint=base.unified_zeropoint)


def _intersect(lists: list) -> tuple:
    key = lambda s: (s.bits, s.mode, s.granularity)
    first = lists[0]
    common = [s for s in first if all(any(key(s) == key(o) for o in other) for other in lists[1:])]
    if common:
        return tuple(common)
    pertensor = [s for s in first if s.granularity == "pertensor"]
    if pertensor:
        return tuple(pertensor)
    return tuple(attrs.evolve(s, granularity="pertensor") for s in first)


def _weight_channel_axes(node: ov.Node, port: int, rank: int) -> tuple:
    t = node.get_type_name()
    if t == "Gather":   # an embedding table: one scale per gathered row
        axis = Graph.constant_value(node.input_value(2))
        return (int(axis.ravel()[0]) % rank,) if axis is not None and axis.size == 1 else (0,)
    if t == "GroupConvolution":
        return (0, 1)
    if t == "ConvolutionBackpropData":
        return (1,)
    if t == "MatMul":
        tb = node.get_attributes().get("transpose_b", False)
        ta = node.get_attributes().get("transpose_a", False)
        if port == 1:
            return (rank - 2,) if tb else (rank - 1,)
        return (rank - 1,) if ta else (rank - 2,)
    return (0,)


def _act_matmul(node: ov.Node) -> bool:
    """A MatMul of two activations, or attention (its query-by-key product)."""
    if node.get_type_name() == "ScaledDotProductAttention":
        return True
    return node.get_type_name() == "MatMul" and all(
        Graph.constant_node(node.input_value(i)) is None for i in range(2))


def find_quantizers(graph: Graph, target, params, extra_ignored_types=(), symmetric_act_matmul=False,
                    pinned=()) -> tuple:
    """Plan the quantizers of ``graph``. Returns (quantizers, ignored names, unmatched ignored entries).

    Activations the config gives no granularity are quantized per tensor, even where the target allows
    per channel (the inputs of depthwise convolutions on CPU), unless ``auto_activations_granularity`` is
    "perchannel" (POT's and NNCF's choice). Per-channel ranges come from the few calibration samples on
    which each channel fires: on EfficientNet-Lite0 (300 calibration images) late, class-specific channels
    exceed their calibrated range on new images (some never fired during calibration), and that clipping
    cost more than the coarser per-tensor step: logits rel-L2 error vs FP32 0.183 per channel, 0.138 per
    tensor, at the same INT8 latency (docs/algorithms.md).
    With ``symmetric_act_matmul`` (Transformers) the inputs of a MatMul of two activations are
    quantized symmetrically, as the CPU needs. Quantizers of the tensors in ``pinned`` ((node, port)
    pairs that an earlier algorithm of the stage will rescale per channel in front of their consumers,
    e.g. SmoothQuant) stay at their consumers instead of moving up through quantization-agnostic ops,
    so that they quantize the rescaled tensor."""
    ignored, unmatched = resolve_ignored(graph, params.ignored, extra_ignored_types)
    preset = target_preset(target, params.preset)
    act_req = _tensor_request(params.activations)
    if act_req.get("granularity") is None and getattr(params, "auto_activations_granularity", "pertensor") in ("pertensor", "auto"):
        act_req["granularity"] = "pertensor"
    w_req = _tensor_request(params.weights)
    requests: dict = {}       # source (name, port) -> list of (consumer name, port, candidates, channel_axis)
    needs_sym: set = set()    # sources read (maybe through agnostic ops) by a product of two activations
    weights: list = []
    order = {n.get_friendly_name(): i for i, n in enumerate(graph.nodes())}
    for node in graph.nodes():
        name = node.get_friendly_name()
        if name in ignored or params.ignored.skip_model:
            continue
        t, rule = _rule_for(target, node)
        if rule is None or not (rule.activations or rule.weights):
            continue
        ports = rule.ports if rule.ports is not None else range(node.get_input_size())
        ports = [p for p in ports if p < node.get_input_size()]
        ports = [p for p in ports if not _quantized(node.input_value(p))]   # never quantize twice
        const_ports = [p for p in ports if Graph.constant_node(node.input_value(p)) is not None]
        act_ports = [p for p in ports if p not in const_ports and _is_float(node.input_value(p))]
        if t in ELEMENTWISE and rule.ports is None and len(act_ports) < 2:
            continue  # bias Add, scale-shift: fused into the producer, never quantized
        if t in WEIGHTED and rule.weights:
            for p in const_ports:
                out = node.input_value(p)
                if not _is_float(out):
                    continue
                if t == "Gather" and _elements(out) < MIN_TABLE_ELEMENTS:
                    continue  # small tables (positions, segments) save little and every token reads them
                rank = out.get_partial_shape().rank.get_length()
                scheme = choose(rule.weights, preset, "weights", w_req, f"node {name!r}")
                weights.append(Quantizer("weights", (name, p), [(name, p)], scheme, rule.weights,
                                         channel_axis=_weight_channel_axes(node, p, rank) if scheme.granularity == "perchannel" else None))
        if rule.activations:
            for p in act_ports:
                src = node.input_value(p)
                key = (src.get_node().get_friendly_name(), src.get_index())
                axis = 1 if t == "DepthwiseConvolution" else None
                requests.setdefault(key, []).append((name, p, rule.activations, axis))
                if _act_matmul(node):
                    needs_sym.add(key)

    # move quantizers up through quantization-agnostic ops
    groups: dict = {}
    next_group = [0]
    changed = True
    while changed:
        changed = False
        for key in sorted(requests, key=lambda k: -order.get(k[0], 0)):
            node = graph.node(key[0])
            if node.get_type_name() not in target.agnostic_operations and type_of(node) not in target.agnostic_operations:
                continue
            if key[0] in ignored or key in pinned:
                continue
            out = node.output(key[1])
            served = {(n, p) for n, p, _, _ in requests[key]}
            all_inputs = {(i.get_node().get_friendly_name(), i.get_index()) for i in out.get_target_inputs()}
            if served != all_inputs:
                continue
            data_ports = [i for i in range(node.get_input_size())
                          if Graph.constant_node(node.input_value(i)) is None and _is_float(node.input_value(i))]
            if node.get_type_name() != "Concat":
                data_ports = data_ports[:1] if data_ports and data_ports[0] == 0 else []
            if not data_ports:
                continue
            reqs = requests.pop(key)
            cands = _intersect([c for _, _, c, _ in reqs])
            axis = reqs[0][3] if all(r[3] == reqs[0][3] for r in reqs) else None
            if node.get_type_name() not in ("MaxPool", "ReduceMax", "Concat", "Split", "VariadicSplit", "Pad",
                                            "StridedSlice", "Tile", "Broadcast"):
                axis = None  # reshapes and transposes move the channel axis
            gid = groups.pop(key, None)
            if gid is None and node.get_type_name() == "Concat" and len(data_ports) > 1:
                gid = next_group[0]
                next_group[0] += 1
            for p in data_ports:
                src = node.input_value(p)
                nk = (src.get_node().get_friendly_name(), src.get_index())
                requests.setdefault(nk, []).append((key[0], p, cands, axis))
                if key in needs_sym:
                    needs_sym.add(nk)
                if gid is not None:
                    groups[nk] = gid
            changed = True
            break

    quantizers = []
    for key in sorted(requests, key=lambda k: (order.get(k[0], 0), k[1])):
        reqs = requests[key]
        cands = _intersect([c for _, _, c, _ in reqs])
        axis = reqs[0][3] if all(r[3] == reqs[0][3] for r in reqs) else None
        where = f"node {reqs[0][0]!r}"
        scheme = choose(cands, preset, "activations", act_req, where)
        if symmetric_act_matmul and scheme.mode == "asymmetric" and key in needs_sym:
            sym = [c for c in cands if c.mode == "symmetric" and c.granularity == scheme.granularity]
            scheme = sym[0] if sym else attrs.evolve(scheme, mode="symmetric")
        if scheme.granularity == "pertensor":
            axis = None
        elif axis is None:
            scheme = attrs.evolve(scheme, granularity="pertensor")
        quantizers.append(Quantizer("activations", key, [(n, p) for n, p, _, _ in reqs], scheme, cands,
                                    channel_axis=axis, group=groups.get(key),
                                    name=f"{key[0]}/fq_output_{key[1]}",
                                    nonnegative=is_nonnegative(graph.node(key[0]).output(key[1]))))
    for q in weights:
        q.name = f"{q.source[0]}/fq_weights_{q.source[1]}"
    return quantizers + weights, ignored, unmatched


def _tensor_request(tq) -> dict:
    if tq is None:
        return {}
    return {k: getattr(tq, k) for k in ("bits", "mode", "granularity", "level_low", "level_high")}


def check_unmatched(unmatched: list, strict: bool, warn) -> None:
    if not unmatched:
        return
    msg = "; ".join(unmatched) + " matched no node"
    if strict:
        raise ConfigError(msg)
    warn(msg)
