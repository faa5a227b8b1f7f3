"""MinMaxQuantization: insert FakeQuantize ops where the hardware target runs int8, with ranges from
calibration statistics (POT's semantics).

Ranges, for a quantizer with ``levels`` integer levels:

* activations, symmetric: ``hi = max(M, max(8e-5, 0.01 * max_c M))`` with ``M`` the aggregated max
  estimate; ``lo = 0`` when the aggregated min is >= 0 (e.g. after ReLU: unsigned), else
  ``lo = -hi * levels / (levels - 2)`` (int8 zero point 128, scale ``hi / 127``).
* activations and weights, asymmetric: widen ranges narrower than 8e-4, include 0
  (``lo = min(lo, 0)``, ``hi = max(hi, 0)``), then move one border outward so that 0 falls exactly on
  the integer grid (the border that moves outward); a scheme with ``unified_zeropoint`` puts 0 at one
  zero point for all channels, the rounded mean of theirs (:func:`tune_range`).
* weights, symmetric: per output channel ``[-hi, hi]`` with ``hi`` the channel's abs max (floored as
  above), levels 255 for [-127, 127]; with an even number of levels (e.g. ``level_low: 0, level_high:
  255``) ``lo = -hi * levels / (levels - 2)``. Symmetric weights are always signed: ``level_low`` and
  ``level_high`` set the number of levels, ``|level_high| + |level_low| + 1`` as in POT, not the sign.
  With the saturation fix (CPU targets; plugins/algorithms/saturation.py) 8-bit weights of the first
  convolution(s) or of every layer use a 7-bit grid (the range widened by 254/126, so that only [-63, 63] is
  used), or, in ``"measured"`` mode, each output channel the finest grid whose int16 pair sums cannot
  overflow (grids of 128 levels or fewer: no fix).
* activations, symmetric, with ``level_low < 0``: signed even where the data is non-negative (POT).
* weights, symmetric, with a ``max`` estimator of ``max`` or ``quantile`` (POT's example config): its
  absolute counterpart (``abs_max``, ``abs_quantile``) is used, so that ``hi`` covers the negative
  weights too. POT uses the signed estimate and clips them: on EfficientNet-Lite0 its example config
  gives top-1 0.0 in POT (docs/config.md).

Default estimators (per sample, then aggregator over samples), as POT: symmetric per tensor: min/min and
abs_max/mean; asymmetric per tensor: min/mean and max/mean; per channel: min/min and (abs_)max/max.
``range_estimator.preset: quantile`` uses quantile (abs_quantile for a symmetric max) with outlier_prob
1e-4. Unified-scale groups (Concat inputs) share the min of their mins and the max of their maxes; so do,
channel by channel, the weight inputs of an op whose target rule has ``unified_weight_scales`` (the CPU's
LSTM/GRU sequences: its int8 kernel dequantizes the recurrence weights R with the scales of W).
"""
import functools
import warnings

import numpy as np

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.config import normalize_model_type
from ovquant.engine import aggregate
from ovquant.graph import Graph
from ovquant.registry import guarded, make_estimator
from ovquant.statistics import Statistic, TensorRef
from ovquant.plugins.algorithms.params import QuantizationParams, saturation_entry, validate_quantization_params

from . import derived, fragile_ops, granularity_choice, range_choice, saturation
from .fragile_ops import TRANSFORMER_IGNORED_TYPES
from .derived import DERIVABLE
from .placement import check_unmatched, find_quantizers
from .range_config import border_statistic as _stat, default_estimators, estimator_config  # noqa: F401

ZERO_FLOOR = 8e-5
ASYM_MIN_RANGE = 8e-4
#: the estimator a symmetric weight range uses for the max a config names (its absolute counterpart)
SYMMETRIC_MAX = {"max": "abs_max", "quantile": "abs_quantile"}


# ---- range math ----------------------------------------------------------------------------------
def fix_zero_symmetric(hi: np.ndarray) -> np.ndarray:
    hi = np.asarray(hi, np.float64)
    return np.maximum(hi, max(ZERO_FLOOR, 0.01 * float(np.max(hi)) if hi.size else ZERO_FLOOR))


def tune_range(lo: np.ndarray, hi: np.ndarray, levels: int, unified_zeropoint: bool = False) -> tuple:
    """Move one border so that 0 falls on the grid of ``levels`` levels at ``zp = round(-lo * (levels - 1)
    / (hi - lo))``: of the two candidates (keep ``hi``, move ``lo``; keep ``lo``, move ``hi``) the wider is
    kept, so a border only moves outward and no calibrated value is clipped (POT's rule). With
    ``unified_zeropoint`` all channels get one zp, the rounded mean of theirs (POT's tune_range_unify_zp)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    n = levels - 1
    zp = -lo * n / (hi - lo)
    zp = np.full(zp.shape, np.round(np.mean(zp))) if unified_zeropoint else np.round(zp)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo1 = np.where(zp < n, zp * hi / (zp - n), lo)    # keep hi, move lo
        hi2 = np.where(zp > 0, lo * (zp - n) / zp, hi)    # keep lo, move hi
    use1 = (hi - lo1) >= (hi2 - lo)
    use1 = np.where(zp >= n, False, np.where(zp <= 0, True, use1))
    return np.where(use1, lo1, lo), np.where(use1, hi, hi2)


def asymmetric_range(lo, hi, levels: int, unified_zeropoint: bool = False) -> tuple:
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    narrow = (hi - lo) < ASYM_MIN_RANGE
    mid = (hi + lo) / 2
    lo = np.where(narrow, mid - ASYM_MIN_RANGE / 2, lo)
    hi = np.where(narrow, mid + ASYM_MIN_RANGE / 2, hi)
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    return tune_range(lo, hi, levels, unified_zeropoint)


def symmetric_weight_range(mx, levels: int) -> tuple:
    """Symmetric weights are signed whatever the integer grid (``level_low``/``level_high`` only set the
    number of levels, as in POT): ``[-hi, hi]`` for an odd number of levels; for an even number the
    negative side gets one more step, ``lo = -hi * levels / (levels - 2)``, so that 0 is a level (POT uses
    ``[-hi, hi]`` there, which puts 0 between two levels: the CPU then runs the layer in float)."""
    hi = fix_zero_symmetric(mx)
    lo = -hi if levels % 2 == 1 else -hi * levels / (levels - 2)
    return lo, hi


def activation_range(scheme, mn, mx) -> tuple:
    levels = scheme.levels
    if scheme.mode == "symmetric":
        hi = fix_zero_symmetric(mx)
        unsigned = mn is not None and bool(np.all(np.asarray(mn) >= 0)) and (scheme.level_low is None or scheme.level_low >= 0)
        lo = np.zeros_like(hi) if unsigned else (-hi * levels / (levels - 2) if levels > 2 else -hi)
        return lo, hi
    return asymmetric_range(mn, mx, levels, scheme.unified_zeropoint)


def _clip(spec: dict, value: np.ndarray, side: str) -> np.ndarray:
    c = spec.get("clipping_value")
    if c is None:
        return value
    return np.minimum(value, c) if side == "max" else np.maximum(value, -abs(c))


# ---- the algorithm -------------------------------------------------------------------------------
class MinMaxQuantization(Algorithm):
    """Inserts FakeQuantize ops at the places the hardware target runs in int8 and sets their ranges
    from the calibration statistics (see the module docstring for the math)."""

    name = "MinMaxQuantization"
    params_class = QuantizationParams
    validate_params = staticmethod(validate_quantization_params)

    def __init__(self, params, context):
        super().__init__(params, context)
        self.quantizers = None
        self.ignored = set()
        #: the statistics requested for each activation quantizer (by name), from :meth:`statistics`
        self.requests: dict = {}

    def _plan(self, graph: Graph):
        extra = ()
        if normalize_model_type(self.params.model_type) == "transformer":
            extra = TRANSFORMER_IGNORED_TYPES
        pinned = {(t.node, t.port) for t in self.context.transforms.announced}
        self.protected = {} if self.params.ignored.skip_model else fragile_ops.protected(graph)
        find = functools.partial(find_quantizers, float_rules=[lambda g, t: self.protected])   # fragile ops stay float
        qs, ignored, unmatched = find(graph, self.context.target, self.params, extra,
                                      symmetric_act_matmul=bool(extra), pinned=pinned)
        validate = self.params.ignored.validate and not self.context.body   # a body holds only part of the names
        check_unmatched(unmatched, self.context.strict, lambda m: warnings.warn(m, stacklevel=4), validate)
        n_fq = len(graph.find(types="FakeQuantize"))
        if n_fq:
            warnings.warn(f"the model already has {n_fq} FakeQuantize ops (it looks quantized); only places "
                          "without one are quantized", stacklevel=4)
        if self.params.ignored.skip_model:
            warnings.warn("ignored.skip_model is set: nothing is quantized", stacklevel=4)
        elif not qs:
            warnings.warn(f"the model has no op that target {self.context.target.name} quantizes; "
                          "it is saved unchanged", stacklevel=4)
        self.quantizers, self.ignored = qs, ignored
        self.free = granularity_choice.free_quantizers(self, graph, self.params, find, extra, pinned)
        return qs

    def _act_stats(self, q) -> dict:
        cfg = estimator_config(self.params, "activations", q.scheme.mode, q.scheme.granularity)
        t = TensorRef(*q.source)
        out = {"max": _stat(t, "max", cfg["max"], q.channel_axis), "cfg": cfg, "min": None}
        # for symmetric schemes the min side only decides signedness: per tensor, and not needed at
        # all for tensors that are non-negative by construction
        if q.scheme.mode == "asymmetric":
            out["min"] = _stat(t, "min", cfg["min"], q.channel_axis)
        elif not q.nonnegative:
            out["min"] = _stat(t, "min", cfg["min"], None)
        return out

    def _derived(self, q):
        """Per-channel, per-sample min and max of a tensor an earlier algorithm of this stage may change
        per channel; the quantizer's statistics are derived from them after that change."""
        t = TensorRef(*q.source)
        axis = self.context.transforms.axis(t)
        if axis is None:
            return None
        cfg = estimator_config(self.params, "activations", q.scheme.mode, q.scheme.granularity)
        if any(cfg[side]["type"] not in DERIVABLE for side in ("min", "max")) or \
                (q.channel_axis is not None and q.channel_axis != axis):
            return None
        return {"cfg": cfg, "axis": axis, "derived": True, **derived.requests(t, axis)}

    def statistics(self, graph: Graph):
        qs = self._plan(graph)
        self.requests = {q.name: self._derived(q) or self._act_stats(q) for q in qs if q.kind == "activations"}
        for s in self.requests.values():
            yield from (st for st in (s["min"], s["max"]) if st is not None)
        yield from granularity_choice.requested(self, estimator_config)   # candidates of free granularities
        yield from saturation.requested(self, graph)   # per-channel input maxima ("measured" mode)

    def _derive(self, q, d: dict, stats) -> tuple:
        t = TensorRef(*q.source)
        lo = np.asarray(stats[d["min"]], np.float64)
        hi = np.asarray(stats[d["max"]], np.float64)
        transform = self.context.transforms.get(t)
        if transform is not None:
            lo, hi = transform.apply(lo, -1), transform.apply(hi, -1)
        per_channel = q.channel_axis is not None

        def side(name):
            spec = d["cfg"][name]
            st = Statistic.make(t, spec["type"], spec["aggregator"], q.channel_axis,
                                aggregator_params=spec.get("aggregator_params"))
            value = aggregate(st, derived.per_sample(spec["type"], lo, hi, per_channel))
            return _clip(spec, np.asarray(value, np.float64), name)

        mn = side("min") if q.scheme.mode == "asymmetric" or not q.nonnegative else np.zeros(())
        if q.scheme.mode == "symmetric" and not q.nonnegative:
            mn = np.asarray(np.min(mn))
        return mn, side("max")

    def _range_values(self, q, stats) -> tuple:
        """(aggregated min, aggregated max) of activation quantizer ``q``, clipped as configured."""
        s = self.requests[q.name]
        if s.get("derived"):
            return self._derive(q, s, stats)
        mn = (np.zeros(()) if s["min"] is None else
              _clip(s["cfg"]["min"], np.asarray(stats[s["min"]], np.float64), "min"))
        mx = _clip(s["cfg"]["max"], np.asarray(stats[s["max"]], np.float64), "max")
        return mn, mx

    @staticmethod
    def _unify(acts: list, values: dict) -> dict:
        """Unified-scale groups share the min of their mins and the max of their maxes."""
        groups: dict = {}
        for q in acts:
            if q.group is not None:
                groups.setdefault(q.group, []).append(q)
        for members in groups.values():
            mn = min(float(np.min(values[q.name][0])) for q in members)
            mx = max(float(np.max(values[q.name][1])) for q in members)
            for q in members:
                values[q.name] = (np.asarray(mn), np.asarray(mx))
        return values

    def apply(self, graph: Graph, stats) -> dict:
        qs = self.quantizers   # planned in statistics(), with the requests
        acts = [q for q in qs if q.kind == "activations"]
        values = self._unify(acts, {q.name: self._range_values(q, stats) for q in acts})
        first = saturation.fixed_layers(self, graph)
        report, skipped = self._quantize_activations(graph, acts, values)
        granularity_choice.record(self, graph, self.choice_requests, stats, activation_range)
        range_choice.record(self, graph)
        report += self._quantize_weights(graph, qs, first, stats)
        if skipped:
            warnings.warn(f"no finite calibration value for node(s) {', '.join(skipped)}; left in float",
                          stacklevel=4)
        sat = saturation_entry(self.params, self.context.target.saturation_fix,
                               sum(bool(e.get("saturation_fix")) for e in report))
        n_w = sum(e.get("kind") == "weights" for e in report)
        entry = {"quantizers": report, "n_fake_quantize": len(report), "no_finite_values": skipped,
                 "ignored": sorted(self.ignored), "protected": dict(sorted(self.protected.items())),
                 "saturation_fix": sat,
                 "summary": f"placed {len(report)} FakeQuantize ops ({n_w} on weights, {len(report) - n_w} on "
                            f"activations); {len(self.ignored)} node(s) ignored, {len(skipped)} left in float for "
                            "lack of finite values"}
        if "notice" in sat:
            entry["notice"] = sat["notice"]
        return entry

    def _quantize_activations(self, graph: Graph, acts: list, values: dict) -> tuple:
        """Insert the activation FakeQuantizes; (report entries, nodes left in float)."""
        report, skipped = [], []
        for q in acts:
            mn, mx = values[q.name]
            if not (np.all(np.isfinite(mx)) and np.all(np.isfinite(mn))):
                skipped.append(q.source[0])   # no finite calibration value at all: leave it in float
                continue
            targets = [graph.node(n).input(p) for n, p in q.inputs]
            targets = [t for t in targets if t.get_source_output().get_node().get_type_name() != "FakeQuantize"]
            if not targets:
                continue   # quantized meanwhile (an earlier algorithm of this stage)
            lo, hi = activation_range(q.scheme, mn, mx)
            lo, hi = self._shape_activation(graph, q, lo, hi)
            graph.insert_fake_quantize(targets, lo, hi, q.scheme.levels, q.name)
            report.append(self._entry(q, lo, hi))
        return report, skipped

    def _quantize_weights(self, graph: Graph, qs: list, first: dict, stats) -> list:
        """Insert the weight FakeQuantizes (``first``: the layers with the saturation fix, saturation.fixed_layers)."""
        planned = []
        for q in qs:
            if q.kind != "weights":
                continue
            node = graph.node(q.source[0])
            out = node.input_value(q.source[1])
            if Graph.constant_node(out) is None:
                continue   # quantized meanwhile (an earlier algorithm of this stage)
            planned.append((q, node, self._weight_range(q, Graph.constant_value(out).astype(np.float64))))
        planned = self._unify_weights(planned)
        report = []
        for q, node, (lo, hi) in planned:
            fixed = 0
            if q.source[0] in first:
                lo, hi, fixed = saturation.fix(self, q, node, lo, hi, stats, first[q.source[0]])
            graph.insert_fake_quantize(node.input(q.source[1]), lo, hi, q.scheme.levels, q.name)
            e = self._entry(q, lo, hi)
            e["saturation_fix"] = fixed > 0
            if fixed and saturation.measured(self.params):
                e["saturation_fix_channels"] = fixed
            if q.weight_group is not None:
                e["unified_weight_group"] = q.weight_group
            report.append(e)
        return report

    @staticmethod
    def _unify_weights(planned: list) -> list:
        """The weight quantizers of one ``weight_group`` (the target's ``unified_weight_scales``) share one
        range per channel: the min of their lows and the max of their highs, channel by channel where their
        ranges have one shape, else over all channels."""
        groups: dict = {}
        for i, (q, _, _) in enumerate(planned):
            if q.weight_group is not None:
                groups.setdefault(q.weight_group, []).append(i)
        for idx in groups.values():
            if len(idx) < 2:
                continue
            ranges = [tuple(np.asarray(v, np.float64) for v in planned[i][2]) for i in idx]
            if len({r[0].shape for r in ranges} | {r[1].shape for r in ranges}) == 1:
                lo = np.minimum.reduce([r[0] for r in ranges])
                hi = np.maximum.reduce([r[1] for r in ranges])
                shared = [(lo, hi)] * len(idx)
            else:
                lo, hi = min(float(np.min(r[0])) for r in ranges), max(float(np.max(r[1])) for r in ranges)
                shared = [(np.full(r[0].shape, lo), np.full(r[1].shape, hi)) for r in ranges]
            for i, rng in zip(idx, shared):
                planned[i] = (planned[i][0], planned[i][1], rng)
        return planned

    # ---- helpers ---------------------------------------------------------------------------------
    def _shape_activation(self, graph, q, lo, hi):
        lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
        if q.channel_axis is None or lo.ndim == 0 and hi.ndim == 0:
            return lo.reshape(()) if lo.size == 1 else lo, hi.reshape(()) if hi.size == 1 else hi
        rank = graph.node(q.source[0]).output(q.source[1]).get_partial_shape().rank.get_length()
        shape = [1] * rank
        c = max(lo.size, hi.size)
        shape[q.channel_axis] = c
        return np.broadcast_to(lo, (c,)).reshape(shape), np.broadcast_to(hi, (c,)).reshape(shape)

    def _weight_range(self, q, w: np.ndarray) -> tuple:
        axes = tuple(a for a in range(w.ndim) if q.channel_axis is None or a not in q.channel_axis)
        cfg = estimator_config(self.params, "weights", q.scheme.mode, q.scheme.granularity)

        def estimate(side):
            spec = cfg[side]
            def reduce():
                est = make_estimator(spec["type"], side=side, outlier_prob=spec.get("outlier_prob", 1e-4),
                                     **spec.get("params", {}))
                return np.asarray(est.reduce(w[None], tuple(a + 1 for a in axes)), np.float64)[0]

            v = guarded("estimators", spec["type"], f"reduce (weights of {q.source[0]})", reduce, passthrough=())
            keep = [1 if a in axes else w.shape[a] for a in range(w.ndim)]
            return _clip(spec, v.reshape(keep), side)

        if q.scheme.mode == "symmetric":
            # a symmetric range covers |w|: a signed max estimator (POT's example config asks "quantile")
            # would clip the negative weights of every channel whose largest weights are negative
            cfg["max"] = {**cfg["max"], "type": SYMMETRIC_MAX.get(cfg["max"]["type"], cfg["max"]["type"])}
            return symmetric_weight_range(estimate("max"), q.scheme.levels)
        return asymmetric_range(estimate("min"), estimate("max"), q.scheme.levels, q.scheme.unified_zeropoint)

    @staticmethod
    def _entry(q, lo, hi) -> dict:
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        e = {"name": q.name, "kind": q.kind, "tensor": f"{q.source[0]}:{q.source[1]}",
             "consumers": [f"{n}:{p}" for n, p in q.inputs], "levels": q.scheme.levels,
             "scheme": q.scheme.describe(), "granularity": q.scheme.granularity}
        if lo.size == 1 and hi.size == 1:
            e["range"] = [round(float(lo.ravel()[0]), 6), round(float(hi.ravel()[0]), 6)]
        else:
            e["range"] = [round(float(lo.min()), 6), round(float(hi.max()), 6)]
            e["channels"] = int(max(lo.size, hi.size))
        if q.group is not None:
            e["unified_scale_group"] = q.group
        return e


@hookimpl
def register_algorithms(register):
    register(MinMaxQuantization)
