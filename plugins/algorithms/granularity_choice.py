"""ActivationGranularityChoice: per quantizer, per-tensor or per-channel activation ranges, whichever
causes the smaller error on calibration samples held back from the ranges being compared.

Where the target allows both granularities for an activation (on CPU: the inputs of depthwise
convolutions) and the config fixes neither (``activations.granularity`` unset,
``auto_activations_granularity: "auto"``), MinMaxQuantization places the quantizer per tensor and, in
the same statistics pass, also estimates

* the *fit* candidates: the per-tensor and the per-channel range (MinMax's estimators for each
  granularity) from every calibration sample except the first ``HELD_BACK`` (aggregator ``skip_first``);
* the per-channel range from every sample (the range used if per channel wins).

This step then runs a pass of its own over the first ``HELD_BACK`` samples (held back from the fit
candidates) on the quantized model, and measures for both fit candidates ``k`` the error of the
quantizer's consumer: for a depthwise convolution, output channel ``c`` is input channel ``c``
convolved with its kernel ``w_c``, so a quantization error ``d_c`` of the input, white across
positions, adds ``||w_c||^2 * E[d_c^2]`` to that output channel's mean squared error:

    score_k = sum_c ||w_c||^2 * mean over held-back samples and positions of (FQ_k(x_c) - x_c)^2

(estimator ``fq_channel_error``, on at most ``MAX_POSITIONS`` positions per channel: an odd-strided
subset of larger feature maps; ``||w_c||^2 = 1`` for consumers without weights). The quantizer becomes
per channel (the all-sample per-channel range) when ``score_perchannel < score_pertensor``; otherwise it
stays per tensor, as placed. A per-channel range fits the samples it came from: scored on them it
would always win, which is why the scoring samples are held back from both candidates.

With no calibration sample after the first ``HELD_BACK`` nothing is changed. The step is a new stage; the saturation fix, bias correction and every other choice
of the first stage are untouched (bias correction corrects the weight error only).
"""
import attrs
import numpy as np

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.graph import Graph, type_of
from ovquant.quant_math import weights_of
from ovquant.statistics import Statistic, TensorRef

#: calibration samples held back from the fit candidates and used to score them
HELD_BACK = 64
STATE = "ActivationGranularityChoice"
#: positions per channel the error is measured on (a strided subset of larger tensors)
MAX_POSITIONS = 1024


def enabled(params) -> bool:
    """Whether the config leaves the activations' granularity to the measured choice."""
    tq = getattr(params, "activations", None)
    return getattr(params, "auto_activations_granularity", "pertensor") == "auto" and \
        (tq is None or tq.granularity is None)


def free_quantizers(minmax, graph: Graph, params, find, extra, pinned) -> dict:
    """``{quantizer name: (channel axis, per-channel scheme)}`` for MinMax's per-tensor activation
    quantizers that the target would also run per channel (``find``: the placement's find_quantizers, run
    again with per-channel activations allowed; the same tensor serving the same consumers)."""
    if not enabled(params):
        return {}
    qs = minmax.quantizers
    pcs, _, _ = find(graph, minmax.context.target, attrs.evolve(params, auto_activations_granularity="perchannel"),
                     extra, symmetric_act_matmul=bool(extra), pinned=pinned)
    by_src = {q.source: q for q in pcs if q.kind == "activations" and q.scheme.granularity == "perchannel"
              and q.channel_axis is not None}
    out = {}
    for q in qs:
        p = by_src.get(q.source)
        if q.kind == "activations" and q.group is None and p is not None and \
                q.scheme.granularity == "pertensor" and sorted(p.inputs) == sorted(q.inputs):
            out[q.name] = (p.channel_axis, p.scheme)
    return out


def _side_stats(tensor, cfg: dict, mode: str, nonneg: bool, axis, agg=None) -> dict:
    """Min/max statistics as MinMax requests them (symmetric: the min per tensor, for the sign only),
    each with aggregator ``agg(spec)`` (default: the configured one)."""
    def make(side, ax):
        spec = cfg[side]
        params = {"side": side, **({"outlier_prob": spec["outlier_prob"]} if "outlier_prob" in spec else {})}
        a = agg(spec) if agg else (spec.get("aggregator", "mean"), None)
        return Statistic.make(tensor, spec["type"], a[0], ax, params, a[1])
    out = {"max": make("max", axis), "min": None}
    if mode == "asymmetric":
        out["min"] = make("min", axis)
    elif not nonneg:
        out["min"] = make("min", None)
    return out


def requests(minmax, free: dict, estimator_config) -> dict:
    """The extra statistics of each free quantizer: ``{name: {"fit_pt", "fit_pc", "pc": side stats}}``."""
    held = lambda spec: ("skip_first", {"inner": spec.get("aggregator", "mean"), "skip": HELD_BACK})
    out = {}
    for q in minmax.quantizers:
        if q.name not in free or minmax.context.transforms.axis(TensorRef(*q.source)) is not None:
            continue
        axis, pc_scheme = free[q.name]
        t, mode = TensorRef(*q.source), q.scheme.mode
        cfg_pt = estimator_config(minmax.params, "activations", mode, "pertensor")
        cfg_pc = estimator_config(minmax.params, "activations", mode, "perchannel")
        out[q.name] = {"fit_pt": _side_stats(t, cfg_pt, mode, q.nonnegative, None, held),
                       "fit_pc": _side_stats(t, cfg_pc, mode, q.nonnegative, axis, held),
                       "pc": _side_stats(t, cfg_pc, mode, q.nonnegative, axis), "axis": axis, "scheme": pc_scheme}
    return out


def requested(minmax, estimator_config):
    """Sets ``minmax.choice_requests`` (:func:`requests`) and yields their statistics."""
    minmax.choice_requests = reqs = requests(minmax, minmax.free, estimator_config)
    for r in reqs.values():
        for key in ("fit_pt", "fit_pc", "pc"):
            yield from (s for s in r[key].values() if s is not None)


def _values(side: dict, stats) -> tuple:
    mn = np.zeros(()) if side["min"] is None else np.asarray(stats[side["min"]], np.float64)
    return mn, np.asarray(stats[side["max"]], np.float64)


def _kernel_energy(graph: Graph, q, channels: int) -> np.ndarray:
    """``||w_c||^2`` per input channel of the depthwise consumers of ``q`` (summed), else ones."""
    e = np.zeros(channels)
    for name, port in q.inputs:
        node = graph.node(name)
        w = weights_of(node, 1)[0] if type_of(node) == "DepthwiseConvolution" and port == 0 else None
        if w is None or w.size % channels:
            e += 1.0
        else:
            e += np.sum(w.reshape(channels, -1) ** 2, axis=1)
    return e


def record(minmax, graph: Graph, reqs: dict, stats, activation_range) -> None:
    """After MinMax placed its quantizers: the candidates of each free one, for the choice step."""
    state = minmax.context.state(STATE, dict)
    for q in minmax.quantizers:
        r = reqs.get(q.name)
        if r is None or not graph.has_node(q.name):
            continue
        try:
            fit_pt = activation_range(q.scheme, *_values(r["fit_pt"], stats))
            fit_pc = activation_range(r["scheme"], *_values(r["fit_pc"], stats))
            pc = activation_range(r["scheme"], *_values(r["pc"], stats))
        except (KeyError, ValueError):
            continue
        if not all(np.all(np.isfinite(v)) for v in (*fit_pt, *fit_pc, *pc)):
            continue
        c = int(np.size(pc[1]))
        state[q.name] = {"source": q.source, "axis": r["axis"], "levels": q.scheme.levels, "fit_pt": fit_pt,
                         "fit_pc": fit_pc, "pc": pc, "energy": _kernel_energy(graph, q, c), "channels": c}


class ActivationGranularityChoice(Algorithm):
    """Per-tensor or per-channel ranges per activation quantizer, by the held-back error (see module)."""

    name = "ActivationGranularityChoice"
    new_stage = True

    def __init__(self, params, context):
        super().__init__(params, context)
        self.requests: dict = {}

    def stage_samples(self, n):
        """This stage scores on the first ``HELD_BACK`` samples only."""
        return HELD_BACK if n is None else min(n, HELD_BACK)

    def statistics(self, graph: Graph):
        state = self.context.state(STATE, dict)
        for name, s in state.items():
            if not graph.has_node(name) or graph.node(name).get_type_name() != "FakeQuantize":
                continue
            flat = lambda v, c: tuple(np.broadcast_to(np.asarray(v, np.float64).ravel(), (c,)).tolist()) \
                if np.size(v) > 1 else (float(np.asarray(v).ravel()[0]),)
            c = s["channels"]
            lows = (flat(s["fit_pt"][0], 1), flat(s["fit_pc"][0], c))
            highs = (flat(s["fit_pt"][1], 1), flat(s["fit_pc"][1], c))
            st = Statistic.make(TensorRef(*s["source"]), "fq_channel_error", "mean", s["axis"],
                                {"lows": lows, "highs": highs, "levels": s["levels"], "axis": s["axis"],
                                 "max_positions": MAX_POSITIONS})
            self.requests[name] = st
            yield st

    def apply(self, graph: Graph, stats) -> dict:
        state = self.context.state(STATE, dict)
        chosen, report = [], []
        for name, st in self.requests.items():
            s = state[name]
            err = np.asarray(stats[st], np.float64).reshape(s["channels"], 2)
            score = s["energy"] @ np.where(np.isfinite(err), err, 0.0)
            pc = bool(score[1] < score[0])
            report.append({"name": name, "score_pertensor": float(score[0]), "score_perchannel": float(score[1]),
                           "granularity": "perchannel" if pc else "pertensor"})
            if pc:
                self._set_range(graph, graph.node(name), s)
                chosen.append(name)
        return {"choices": report, "n_perchannel": len(chosen), "n_scored": len(report),
                "summary": f"{len(chosen)} of {len(report)} activation quantizer(s) per channel by their "
                           f"held-back error ({HELD_BACK} samples)"}

    @staticmethod
    def _set_range(graph: Graph, fq, s: dict) -> None:
        rank = fq.input_value(0).get_partial_shape().rank.get_length()
        shape = [1] * rank
        shape[s["axis"]] = s["channels"]
        lo, hi = (np.broadcast_to(np.asarray(v, np.float32).ravel(), (s["channels"],)).reshape(shape)
                  for v in s["pc"])
        import openvino.opset13 as ops
        for port, v in ((1, lo), (2, hi), (3, lo), (4, hi)):
            fq.input(port).replace_source_output(ops.constant(np.ascontiguousarray(v)).output(0))
        graph.invalidate()


@hookimpl
def register_algorithms(register):
    register(ActivationGranularityChoice)
