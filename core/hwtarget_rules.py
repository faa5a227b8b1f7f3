"""What the fields of a hardware target mean (docs/hw_targets.md), as methods of the target.

:class:`ovquant.hwtarget.HardwareTarget` answers, through :class:`TargetRules`:

* which rule an op matches (:meth:`~TargetRules.rule_for`: its type, virtual types first, and
  ``attributes``), which input ports get a quantizer (``ports``) and which schemes each one allows
  (:meth:`~TargetRules.port_schemes`: ``weights`` for a constant input, ``activations`` otherwise);
* which scheme a preset picks from those candidates (:meth:`~TargetRules.pick`, after ``preset_aliases``),
  and what one quantizer feeding several ops may use (:meth:`~TargetRules.shared_schemes`);
* whether an op's inputs share one range (:meth:`~TargetRules.unified_scales`) and whether quantizers
  move up through it (:meth:`~TargetRules.is_agnostic`).

Placement (a plugin) and third-party algorithms call these; this module names no concrete target.
"""
from __future__ import annotations

from typing import Optional, Union

import attrs
import openvino as ov

from .errors import HardwareTargetError
from .graph import Graph, attributes_match, type_of

PRESETS = ("performance", "mixed", "accuracy")
#: POT's other spellings of the presets
PRESET_SPELLINGS = {"symmetric": "performance", "asymmetric": "accuracy"}
#: the keys of a user's scheme request (``activations``/``weights`` in a config); None leaves one free
REQUEST_KEYS = ("bits", "mode", "granularity", "level_low", "level_high")


def port_kind(node: ov.Node, port: int) -> str:
    """``"weights"`` when input ``port`` of ``node`` comes from a constant (through Convert), else
    ``"activations"``."""
    return "weights" if Graph.constant_node(node.input_value(port)) is not None else "activations"


def fits(request: dict, scheme) -> bool:
    """Whether a user's scheme request (a dict of :data:`REQUEST_KEYS`, None for free) runs on candidate
    ``scheme``: fewer bits or levels fit, per-tensor fits per-channel, symmetric fits asymmetric."""
    if request.get("bits") is not None and request["bits"] > scheme.bits:
        return False
    if request.get("mode") == "asymmetric" and scheme.mode == "symmetric":
        return False
    if request.get("granularity") == "perchannel" and scheme.granularity == "pertensor":
        return False
    lo, hi = request.get("level_low"), request.get("level_high")
    if lo is not None and hi is not None and hi - lo + 1 > scheme.levels:
        return False
    return True


def request_levels(request: dict, kind: str, bits: int, mode: str) -> tuple:
    """(level_low, level_high) of a request: when only one is given, the other is POT's default
    (``level_low`` -2^(bits-1), +1 for symmetric weights; ``level_high`` 2^(bits-1)-1); neither: (None, None)."""
    lo, hi = request.get("level_low"), request.get("level_high")
    if lo is None and hi is None:
        return None, None
    if lo is None:
        lo = -2 ** (bits - 1) + (1 if kind == "weights" and mode == "symmetric" else 0)
    if hi is None:
        hi = 2 ** (bits - 1) - 1
    return lo, hi


def _with_request(base, request: dict, kind: str):
    """``base`` with the user's request applied: given keys replace the candidate's; the candidate's
    integer grid is kept unless the request changes the bit width."""
    bits, mode = request.get("bits") or base.bits, request.get("mode") or base.mode
    lo, hi = request_levels(request, kind, bits, mode)
    keep_grid = not request.get("bits") or request["bits"] == base.bits
    return attrs.evolve(base, bits=bits, mode=mode, granularity=request.get("granularity") or base.granularity,
                        level_low=lo if lo is not None else (base.level_low if keep_grid else None),
                        level_high=hi if hi is not None else (base.level_high if keep_grid else None))


class TargetRules:
    """The semantics of a target's fields; mixed into :class:`ovquant.hwtarget.HardwareTarget`, which
    provides ``operations`` (op type -> list of rules), ``agnostic_operations`` and ``preset_aliases``."""

    __slots__ = ()

    # ---- operations: which rule, which ports, which schemes ----------------------------------------------
    def rules(self, op_type: str) -> list:
        """The rules the target gives op type ``op_type`` (in file order; empty: not quantized)."""
        return self.operations.get(op_type, [])

    def rule_for(self, node: ov.Node):
        """The rule ``node`` follows, or None (the op stays float): the rules of its virtual type
        (``DepthwiseConvolution``) if the target has any, else those of its OpenVINO type; of these the
        first whose ``attributes`` all match the node's."""
        virtual = type_of(node)
        rules = self.rules(virtual) or self.rules(node.get_type_name())
        for rule in rules:
            if not rule.attributes or attributes_match(node, dict(rule.attributes)):
                return rule
        return None

    def quantized_ports(self, node: ov.Node) -> list:
        """The input ports of ``node`` its rule quantizes (``ports``, else every input), in order; empty
        when no rule matches or the rule has no schemes."""
        rule = self.rule_for(node)
        if rule is None or not (rule.activations or rule.weights):
            return []
        ports = rule.ports if rule.ports is not None else range(node.get_input_size())
        return [p for p in ports if p < node.get_input_size()]

    def port_schemes(self, node: ov.Node, port: int, kind: Optional[str] = None) -> tuple:
        """The schemes input ``port`` of ``node`` allows, in order of preference: the rule's ``weights``
        when the input is a constant, its ``activations`` otherwise (``kind`` forces one); () when the
        port is not quantized."""
        if port not in self.quantized_ports(node):
            return ()
        rule = self.rule_for(node)
        return getattr(rule, kind or port_kind(node, port))

    def unified_scales(self, node: ov.Node) -> bool:
        """Whether the quantized inputs of ``node`` share one range (its rule's ``unified_scales``)."""
        rule = self.rule_for(node)
        return bool(rule is not None and rule.unified_scales)

    def unified_weight_scales(self, node: ov.Node) -> bool:
        """Whether the weight inputs of ``node`` share one scale per output channel (its rule's
        ``unified_weight_scales``)."""
        rule = self.rule_for(node)
        return bool(rule is not None and rule.unified_weight_scales)

    def is_agnostic(self, op: Union[str, ov.Node]) -> bool:
        """Whether quantizers move up through ``op`` (an op type, or a node: its OpenVINO or virtual type
        is in ``agnostic_operations``)."""
        if isinstance(op, str):
            return op in self.agnostic_operations
        return op.get_type_name() in self.agnostic_operations or type_of(op) in self.agnostic_operations

    # ---- presets: which scheme ------------------------------------------------------------------------
    def resolve_preset(self, preset: str) -> str:
        """The preset this target runs for ``preset``: its ``preset_aliases`` (POT's per-device renaming,
        e.g. ``accuracy`` is ``mixed`` on CPU and GPU), after POT's ``symmetric``/``asymmetric`` spellings."""
        preset = PRESET_SPELLINGS.get(preset, preset)
        return dict(self.preset_aliases).get(preset, preset)

    def pick(self, candidates, preset: str, kind: str, request: Optional[dict] = None, where: str = ""):
        """The scheme ``preset`` picks from ``candidates`` (a port's, or :meth:`shared_schemes`) for
        ``kind`` (``"activations"``/``"weights"``): after :meth:`resolve_preset`, ``performance`` takes the
        first candidate, ``mixed`` the first for weights and the last for activations, ``accuracy`` the
        last. A user's ``request`` (dict of :data:`REQUEST_KEYS`) then takes, in that preset order, the
        first candidate that matches its bits, mode and granularity exactly, else the first it
        :func:`fits`, with the request's keys applied. Raises :class:`HardwareTargetError` naming ``where``
        when there is no candidate, or none the request fits."""
        request = request or {}
        if not candidates:
            raise HardwareTargetError(f"{where}: the target allows no {kind} scheme")
        preset = self.resolve_preset(preset)
        last = preset == "accuracy" or (preset == "mixed" and kind == "activations")
        order = list(reversed(candidates)) if last else list(candidates)
        if not any(v is not None for v in request.values()):
            return order[0]
        exact = [s for s in order if all(request.get(k) in (None, getattr(s, k)) for k in ("bits", "mode", "granularity"))]
        pool = exact or [s for s in order if fits(request, s)]
        if not pool:
            want = ", ".join(f"{k}={v}" for k, v in request.items() if v is not None)
            allowed = "; ".join(s.describe() for s in candidates)
            raise HardwareTargetError(f"{where}: {kind} scheme ({want}) is not allowed by the target (allowed: {allowed})")
        return _with_request(pool[0], request, kind)

    @staticmethod
    def shared_schemes(lists) -> tuple:
        """The candidates of one quantizer that serves several ports (each with its list): those of the
        first list whose bits, mode and granularity every other list allows too, in the first list's
        order; when none is common, the first list's per-tensor candidates (per-tensor runs wherever
        per-channel does), else the first list made per-tensor."""
        key = lambda s: (s.bits, s.mode, s.granularity)
        first = lists[0]
        common = [s for s in first if all(any(key(s) == key(o) for o in other) for other in lists[1:])]
        if common:
            return tuple(common)
        pertensor = [s for s in first if s.granularity == "pertensor"]
        if pertensor:
            return tuple(pertensor)
        return tuple(attrs.evolve(s, granularity="pertensor") for s in first)
