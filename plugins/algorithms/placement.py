"""Where MinMaxQuantization puts FakeQuantize ops (the placement rules of POT and NNCF).

What the hardware target allows (which op, which port, which schemes, which preset picks which) is
asked of the target (:mod:`ovquant.hwtarget_rules`); this module adds the placement policy:

1. Nodes left in float (:func:`float_nodes`): the config's ignored scope, op types an algorithm keeps in
   float, and what placement-rule plugins name. They get no quantizer and quantizers do not move
   through them. Integer tensors, constants and tensors already quantized are never quantized.
2. Every other node the target has a rule for gets a quantizer request on each float, non-constant
   input its rule quantizes, and a weight quantizer on each constant input its rule gives weight
   schemes (per channel: one scale per output channel; per tensor for a MatMul's constant first input,
   ``W @ x``: its rows are not the output's last axis, the only per-channel scale CPU runs). Element-wise
   ops with fewer than two activation inputs (a bias Add, a scale-shift Multiply) are part of a fused
   pattern and get none, unless their rule names ``ports``. A tensor with one value per sample (static
   shape of 1s, e.g. the scale and zero point a dynamically quantized ONNX model computes with
   ReduceMax/ReduceMin) counts as no activation input and is never quantized: no int8 kernel reads it,
   and its error rescales a whole tensor. Requests on the inputs of an op with ``unified_scales`` form
   a unified-scale group (one range).
3. Requests on the same producer output are served by one quantizer.
4. A quantizer moves up through quantization-agnostic ops (MaxPool, Reshape, Transpose, Concat, ...)
   when every consumer of that op's output asked for one; through a Concat it splits into one
   quantizer per input, and when the target gives the op ``unified_scales`` they form one group.
"""
from typing import Optional

import attrs
import numpy as np
import openvino as ov

from ovquant.graph import Graph, is_nonnegative, type_of
from ovquant.hwtarget import Scheme
from ovquant.hwtarget_rules import port_kind

from .ignored_scope import check_unmatched, resolve_ignored  # noqa: F401 (re-exported)

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
    group: Optional[int] = None     # unified-scale group id (inputs of an op with unified_scales)
    weight_group: Optional[str] = None   # the op whose weight inputs share one scale (unified_weight_scales)
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


def _scalar(out: ov.Output) -> bool:
    """One value per sample by its static shape (rank 0, or every dimension 1): the scale or zero point
    a model computes for its own dynamic quantization, a normalization statistic, a temperature."""
    ps = out.get_partial_shape()
    return ps.rank.is_static and all(d.is_static and d.get_length() == 1 for d in ps)


def _weight_channel_axes(node: ov.Node, port: int, rank: int) -> tuple:
    t = node.get_type_name()
    if t == "Gather":   # an embedding table: one scale per gathered row
        axis = Graph.constant_value(node.input_value(2))
        return (int(axis.ravel()[0]) % rank,) if axis is not None and axis.size == 1 else (0,)
    if t == "GroupConvolution":
        return (0, 1)
    if t == "ConvolutionBackpropData":
        return (1,)
    if t == "MatMul":   # batched weights [..., K, N]: one scale per batch and output column (a scale shared
        # across the batch, [1, N, 1], makes the CPU plugin's int8 batched MatMul read garbage)
        return tuple(range(rank - 2)) + ((rank - 2,) if node.get_attributes().get("transpose_b", False) else (rank - 1,))
    # LSTMSequence/GRUSequence/RNNSequence [directions, gates * hidden, inputs]: one scale per direction (axis 0);
    # per output row the CPU plugin's int8 RNNSeq runs with 1.2-1.8x the output error (docs/algorithms.md)
    return (0,)


def _act_matmul(node: ov.Node) -> bool:
    """A MatMul of two activations, or attention (its query-by-key product)."""
    if node.get_type_name() == "ScaledDotProductAttention":
        return True
    return node.get_type_name() == "MatMul" and all(
        Graph.constant_node(node.input_value(i)) is None for i in range(2))


#: agnostic ops whose every input is data (a quantizer moves to all of them); others move to input 0
ALL_INPUTS_DATA = {"Concat"}
#: agnostic ops that keep the channel axis, so a per-channel request keeps its axis through them
AXIS_KEEPING = {"MaxPool", "ReduceMax", "Concat", "Split", "VariadicSplit", "Pad", "StridedSlice", "Tile", "Broadcast"}


@attrs.define
class Request:
    """One consumer port asking for a quantizer on its producer's output, with what it allows."""

    consumer: str
    port: int
    candidates: tuple
    axis: Optional[int] = None


@attrs.define
class _Plan:
    """The state of one :func:`find_quantizers` call, shared by its steps."""

    graph: Graph
    target: object
    preset: str
    weight_request: dict
    ignored: set
    pinned: frozenset
    order: dict
    requests: dict = attrs.Factory(dict)    # source (node name, port) -> [Request, ...]
    weights: list = attrs.Factory(list)     # weight Quantizers
    needs_sym: set = attrs.Factory(set)     # sources read (maybe through agnostic ops) by a product of two activations
    groups: dict = attrs.Factory(dict)      # source -> unified-scale group id
    n_groups: int = 0

    def request(self, key: tuple, req: Request) -> None:
        self.requests.setdefault(key, []).append(req)

    def unify(self, keys: list, gid: Optional[int] = None) -> None:
        """Put ``keys`` in one unified-scale group: ``gid``'s, merged with the groups they are in already
        (the lowest id stays), or a new one."""
        ids = {self.groups[k] for k in keys if k in self.groups} | ({gid} if gid is not None else set())
        if not ids:
            ids = {self.n_groups}
            self.n_groups += 1
        keep = min(ids)
        for k, g in self.groups.items():
            if g in ids:
                self.groups[k] = keep
        for k in keys:
            self.groups[k] = keep


def _key(out: ov.Output) -> tuple:
    return out.get_node().get_friendly_name(), out.get_index()


def find_quantizers(graph: Graph, target, params, extra_ignored_types=(), symmetric_act_matmul=False,
                    pinned=(), float_rules=()) -> tuple:
    """Plan the quantizers of ``graph``. Returns (quantizers, nodes left in float, unmatched ignored entries).

    The steps: :func:`float_nodes` (the config's ignored scope, ``extra_ignored_types`` and the
    ``float_rules`` of placement-rule plugins), :func:`request_inputs` for every other node (what the
    target's rule of the node asks for: weight quantizers, activation requests on producers' outputs),
    :func:`hoist` (requests move up through quantization-agnostic ops) and :func:`activation_quantizers`
    (one quantizer per requested tensor, its scheme picked by the target's preset).

    Activations the config gives no granularity are quantized per tensor, even where the target allows
    per channel (the inputs of depthwise convolutions on CPU), unless ``auto_activations_granularity`` is
    "perchannel" (POT's and NNCF's choice; docs/config.md has the measurement behind the default).
    With ``symmetric_act_matmul`` (Transformers) the inputs of a MatMul of two activations are
    quantized symmetrically, as the CPU needs. Quantizers of the tensors in ``pinned`` ((node, port)
    pairs that an earlier algorithm of the stage will rescale per channel in front of their consumers,
    e.g. SmoothQuant) stay at their consumers instead of moving up through quantization-agnostic ops,
    so that they quantize the rescaled tensor."""
    ignored, unmatched = float_nodes(graph, params.ignored, extra_ignored_types, target, float_rules)
    plan = _Plan(graph, target, params.preset, _tensor_request(params.weights), ignored, frozenset(pinned),
                 {n.get_friendly_name(): i for i, n in enumerate(graph.nodes())})
    if not params.ignored.skip_model:
        for node in graph.nodes():
            if node.get_friendly_name() not in ignored:
                request_inputs(plan, node)
    hoist(plan)
    act_req = _tensor_request(params.activations)
    if act_req.get("granularity") is None and getattr(params, "auto_activations_granularity", "pertensor") in ("pertensor", "auto"):
        act_req["granularity"] = "pertensor"
    quantizers = activation_quantizers(plan, act_req, symmetric_act_matmul)
    for q in plan.weights:
        q.name = f"{q.source[0]}/fq_weights_{q.source[1]}"
    return quantizers + plan.weights, ignored, unmatched


def float_nodes(graph: Graph, ignored, extra_types=(), target=None, rules=()) -> tuple:
    """Step 1: (names of the nodes left in float, config entries that matched nothing).

    The config's ``ignored`` scope and operations (:func:`resolve_ignored`), every node of
    ``extra_types`` (op types an algorithm keeps in float, e.g. Transformers), and every name a rule of
    ``rules`` returns: a rule is a callable ``rule(graph, target) -> iterable of node names``, the hook
    point for placement-rule plugins (docs/hw_targets.md). A node left in float gets no quantizer on
    its inputs, and quantizers do not move up through it."""
    names, unmatched = resolve_ignored(graph, ignored, extra_types)
    for rule in rules:
        names |= set(rule(graph, target))
    return names, unmatched


def request_inputs(plan: _Plan, node: ov.Node) -> None:
    """Step 2: what the target's rule of ``node`` asks for on its quantized ports (never on a tensor
    that is quantized already, nor on integer ones): a weight quantizer on each constant input whose
    port allows weight schemes, a request on the producer's output of each other input. An element-wise
    op whose rule names no ``ports`` and that has fewer than two activation inputs (a bias Add, a
    scale-shift Multiply) is fused into its producer and asks for nothing, and so does an op whose rule's
    ``requires_activations`` ports are not all activations it quantizes (an LSTMSequence with a constant
    initial state). The requests of an op with ``unified_scales`` form one unified-scale group; the weight
    quantizers of an op with ``unified_weight_scales`` share its name as their ``weight_group``."""
    ports = [p for p in plan.target.quantized_ports(node) if not _quantized(node.input_value(p))]
    const_ports = [p for p in ports if port_kind(node, p) == "weights"]
    act_ports = [p for p in ports if p not in const_ports and _is_float(node.input_value(p))
                 and not _scalar(node.input_value(p))]
    if not ports:
        return
    rule = plan.target.rule_for(node)
    if type_of(node) in ELEMENTWISE and rule.ports is None and len(act_ports) < 2:
        return
    if set(rule.requires_activations) - set(act_ports):
        return   # the device runs the op in int8 only with all of these quantized (LSTM: X and H)
    n_weights = len(plan.weights)
    for p in const_ports:
        _weight_quantizer(plan, node, p)
    if len(plan.weights) - n_weights > 1 and plan.target.unified_weight_scales(node):
        for q in plan.weights[n_weights:]:
            q.weight_group = node.get_friendly_name()
    keys = []
    for p in act_ports:
        candidates = plan.target.port_schemes(node, p, "activations")
        if not candidates:
            continue
        key = _key(node.input_value(p))
        plan.request(key, Request(node.get_friendly_name(), p, candidates,
                                  1 if type_of(node) == "DepthwiseConvolution" else None))
        if _act_matmul(node):
            plan.needs_sym.add(key)
        keys.append(key)
    if len(set(keys)) > 1 and plan.target.unified_scales(node):
        plan.unify(keys)


def _weight_quantizer(plan: _Plan, node: ov.Node, port: int) -> None:
    out = node.input_value(port)
    candidates = plan.target.port_schemes(node, port, "weights")
    if not candidates or not _is_float(out):
        return
    if node.get_type_name() == "Gather" and _elements(out) < MIN_TABLE_ELEMENTS:
        return  # small tables (positions, segments) save little and every token reads them
    name = node.get_friendly_name()
    scheme = plan.target.pick(candidates, plan.preset, "weights", plan.weight_request, f"node {name!r}")
    axes = None
    if scheme.granularity == "perchannel" and node.get_type_name() == "MatMul" and port == 0:
        scheme = attrs.evolve(scheme, granularity="pertensor")   # rows of W in W @ x: not the output's last axis
    elif scheme.granularity == "perchannel":
        axes = _weight_channel_axes(node, port, out.get_partial_shape().rank.get_length())
    plan.weights.append(Quantizer("weights", (name, port), [(name, port)], scheme, candidates, channel_axis=axes))


def hoist(plan: _Plan) -> None:
    """Step 3: move requests up through quantization-agnostic ops, latest tensor first, until none moves."""
    while any(_hoist_one(plan, key) for key in sorted(plan.requests, key=lambda k: -plan.order.get(k[0], 0))):
        pass


def _hoist_one(plan: _Plan, key: tuple) -> bool:
    """Move the requests on output ``key`` of an agnostic op to the op's data inputs, if every consumer of
    that output asked for a quantizer and the op is neither left in float nor pinned. The moved requests
    keep their unified-scale group; through an op with ``unified_scales`` its inputs form one group."""
    node = plan.graph.node(key[0])
    if not plan.target.is_agnostic(node) or key[0] in plan.ignored or key in plan.pinned:
        return False
    served = {(r.consumer, r.port) for r in plan.requests[key]}
    if served != {(i.get_node().get_friendly_name(), i.get_index()) for i in node.output(key[1]).get_target_inputs()}:
        return False
    data_ports = [i for i in range(node.get_input_size())
                  if Graph.constant_node(node.input_value(i)) is None and _is_float(node.input_value(i))]
    if node.get_type_name() not in ALL_INPUTS_DATA:
        data_ports = data_ports[:1] if data_ports and data_ports[0] == 0 else []
    if not data_ports:
        return False
    reqs = plan.requests.pop(key)
    candidates = plan.target.shared_schemes([r.candidates for r in reqs])
    axis = reqs[0].axis if all(r.axis == reqs[0].axis for r in reqs) else None
    if node.get_type_name() not in AXIS_KEEPING:
        axis = None  # reshapes and transposes move the channel axis
    gid = plan.groups.pop(key, None)
    keys = [_key(node.input_value(p)) for p in data_ports]
    for p, nk in zip(data_ports, keys):
        plan.request(nk, Request(key[0], p, candidates, axis))
        if key in plan.needs_sym:
            plan.needs_sym.add(nk)
    if gid is not None or (len(data_ports) > 1 and plan.target.unified_scales(node)):
        plan.unify(keys, gid)
    return True


def activation_quantizers(plan: _Plan, act_req: dict, symmetric_act_matmul: bool) -> list:
    """Step 4: one quantizer per requested tensor, in graph order, serving every request on it. Its
    candidates are those all its requests allow (:meth:`~ovquant.hwtarget_rules.TargetRules.shared_schemes`),
    and the target's preset picks the scheme; the members of a unified-scale group share one pick, from
    what all of them allow."""
    keys = sorted(plan.requests, key=lambda k: (plan.order.get(k[0], 0), k[1]))
    members: dict = {}
    for key in keys:
        members.setdefault(plan.groups.get(key, ("alone", key)), []).append(key)
    picked = {}
    for group in members.values():
        candidates = plan.target.shared_schemes([r.candidates for k in group for r in plan.requests[k]])
        scheme = plan.target.pick(candidates, plan.preset, "activations", act_req,
                                  f"node {plan.requests[group[0]][0].consumer!r}")
        if symmetric_act_matmul and scheme.mode == "asymmetric" and any(k in plan.needs_sym for k in group):
            sym = [c for c in candidates if c.mode == "symmetric" and c.granularity == scheme.granularity]
            scheme = sym[0] if sym else attrs.evolve(scheme, mode="symmetric")
        picked.update((k, (scheme, candidates)) for k in group)
    return [_activation_quantizer(plan, key, *picked[key]) for key in keys]


def _activation_quantizer(plan: _Plan, key: tuple, scheme, candidates) -> Quantizer:
    reqs = plan.requests[key]
    axis = reqs[0].axis if all(r.axis == reqs[0].axis for r in reqs) else None
    if scheme.granularity == "pertensor":
        axis = None
    elif axis is None:
        scheme = attrs.evolve(scheme, granularity="pertensor")
    return Quantizer("activations", key, [(r.consumer, r.port) for r in reqs], scheme, candidates,
                     channel_axis=axis, group=plan.groups.get(key), name=f"{key[0]}/fq_output_{key[1]}",
                     nonnegative=is_nonnegative(plan.graph.node(key[0]).output(key[1])))


def _tensor_request(tq) -> dict:
    if tq is None:
        return {}
    return {k: getattr(tq, k) for k in ("bits", "mode", "granularity", "level_low", "level_high")}
