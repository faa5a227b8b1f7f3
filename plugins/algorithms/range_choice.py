"""ActivationRangeChoice: per activation quantizer, the clipping range and (symmetric schemes) the sign,
whichever candidate causes the smallest error of the quantizer's consumers on held-back samples.

For every per-tensor activation FakeQuantize MinMax placed, with range ``[lo, hi]`` and ``L`` levels,
the candidates are

* ``[f lo, f hi]`` for every factor ``f`` of ``FACTORS`` (``f = 1`` is the current range; scaling both
  borders keeps an asymmetric zero point on the grid and a symmetric range symmetric);
* where the scheme is symmetric and signed (``lo < 0``) and the target's scheme allows unsigned
  (``level_low`` unset or >= 0): the unsigned ``[0, f hi]`` for every ``f`` (twice the resolution on the
  positive side; every negative value is clipped to 0).

Each candidate ``k`` is scored on each of the first ``HELD_BACK`` calibration samples ``s`` (the samples
ActivationGranularityChoice holds back from its fit candidates; this step runs in its stage and pass) by
its consumers' output error under a white-noise model: a consumer ``y = sum_c W_c * x_c`` (convolution,
group convolution, MatMul with constant weights) turns an input error ``d_c`` in channel ``c`` that is
uncorrelated across positions into an output mean squared error ``||W_c||^2 E[d_c^2]``, with ``||W_c||^2``
the energy of every weight that multiplies channel ``c`` (convolution ``W[o, c, ...]``: summed over
``o`` and taps; group convolution ``W[g, o, j, ...]``: channel ``g C/G + j``; MatMul ``x @ W``: row ``c``
of ``W``). So

    S[s, k] = sum_c e_c * mean over positions of sample s of (FQ_k(x_c) - x_c)^2

with ``e_c`` the sum of ``||W_c||^2`` over the quantizer's weighted consumers plus 1 for each other
consumer (the quantized tensor's own error). Estimator ``fq_channel_error`` computes the per-sample,
per-channel errors in the graph (on at most ``MAX_POSITIONS`` positions per channel), aggregator ``None``
keeps the ``HELD_BACK`` per-sample rows: memory does not grow with the number of calibration samples.
Quantizers of one unified-scale group (Concat inputs) share one candidate: their scores are summed.

The current range (``k0``) is kept unless a candidate is measurably better: with the per-sample gain
``g_s = S[s, k0] - S[s, k]``, candidate ``k`` qualifies when ``mean(g) > Z * std(g) / sqrt(n)`` (a paired
test over the ``n`` held-back samples) and ``mean(g) > MIN_GAIN * mean(S[:, k0])``; of the qualifying
candidates the one with the largest mean gain is taken. The held-back samples are part of MinMax's range
fit (a mean of per-sample extremes over every calibration sample); what is scored on them is a rescaling
of that fit, not a range fit to them. Quantizers that ActivationGranularityChoice turned per channel
are left as they are.

Check: a change that lowers its consumers' error can raise the model's output error. So the changes are
sorted in graph order and cut into at most ``CHECK_GROUPS`` groups, and the whole model's output error
``E = mean_s e_s`` (:mod:`ovquant.output_probe`: per sample, the outputs' squared error against the float
model, each over its mean squared norm) is measured on ``CHECK_SAMPLES`` calibration samples after the
scored ones, one probe model compiled once with a switch per group. Starting from no change, each group in
turn is kept when it lowers the error by more than ``CHECK_Z`` standard errors of the paired per-sample
gain ``e_s(without) - e_s(with)``; the changes of the other groups are undone.
"""
import numpy as np

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.float_twin import dequantized
from ovquant.graph import Graph, type_of
from ovquant.quant_math import weights_of
from ovquant.statistics import Statistic, TensorRef

from ovquant.dataset import open_source, take
from ovquant.output_probe import OutputProbe, add_switches

from .granularity_choice import HELD_BACK

STATE = "ActivationRangeChoice"
#: range factors tried (1.0: the current range)
FACTORS = (1.5, 1.25, 1.0, 0.85, 0.7)
#: positions per channel the error is measured on (a strided subset of larger tensors)
MAX_POSITIONS = 64
#: a candidate must beat the current range by Z standard errors of the paired per-sample gain ...
Z = 2.0
#: ... and by this fraction of the current range's score
MIN_GAIN = 0.02
#: the check: samples (after the HELD_BACK scored ones, where at least CHECK_MIN more exist), groups of
#: changes tried in graph order, and the standard errors a group must lower the output error by
CHECK_SAMPLES, CHECK_MIN, CHECK_GROUPS, CHECK_Z = 32, 16, 8, 1.0


def enabled(params) -> bool:
    """Whether the config leaves the activations' clipping ranges to the measured choice."""
    return getattr(params, "activation_range_choice", "no") == "auto"


def record(minmax, graph: Graph) -> None:
    """After MinMax placed its quantizers: which activation quantizers this step may change."""
    if not enabled(minmax.params):
        return
    state = minmax.context.state(STATE, dict)
    for q in minmax.quantizers:
        if q.kind == "activations" and graph.has_node(q.name):
            ll = q.scheme.level_low
            state[q.name] = {"group": q.group,
                             "unsigned_ok": q.scheme.mode == "symmetric" and (ll is None or ll >= 0)}


def candidates(lo: float, hi: float, unsigned_ok: bool) -> list:
    """``[(low, high, factor, unsigned)]`` for a current range ``[lo, hi]`` (see the module)."""
    out = [(lo * f, hi * f, f, lo >= 0) for f in FACTORS]
    if unsigned_ok and lo < 0:
        out += [(0.0, hi * f, f, True) for f in FACTORS]
    return out


def _weight(node, port: int):
    w = weights_of(node, port)[0]
    return w if w is not None else dequantized(node.input_value(port))


def consumer_energy(fq, axis: int, channels: int) -> np.ndarray:
    """``e_c`` of the module docstring for the consumers of FakeQuantize ``fq``, channels on ``axis``."""
    rank = fq.input_value(0).get_partial_shape().rank.get_length()
    e = np.zeros(channels)
    for t in fq.output(0).get_target_inputs():
        node, port, v = t.get_node(), t.get_index(), None
        kind = type_of(node)
        w = _weight(node, 1) if port == 0 and kind in ("Convolution", "GroupConvolution", "DepthwiseConvolution",
                                                       "MatMul") else None
        if w is not None and kind == "Convolution" and axis == 1:
            v = np.sum(w ** 2, axis=tuple(a for a in range(w.ndim) if a != 1))
        elif w is not None and kind in ("GroupConvolution", "DepthwiseConvolution") and axis == 1 and w.ndim >= 3:
            v = np.sum(w ** 2, axis=(1,) + tuple(range(3, w.ndim))).reshape(-1)
        elif w is not None and kind == "MatMul" and w.ndim == 2 and axis == rank - 1 and \
                not node.get_attributes().get("transpose_a", False):
            v = np.sum(w ** 2, axis=0 if node.get_attributes().get("transpose_b", False) else 1)
        e += v if v is not None and v.size == channels else 1.0
    return e


def _axis(fq, rank: int) -> int:
    mm = any(t.get_node().get_type_name() == "MatMul" for t in fq.output(0).get_target_inputs())
    return rank - 1 if mm or rank < 3 else 1


def _scalar(fq, port: int):
    v = Graph.constant_value(fq.input_value(port))
    return None if v is None or v.size != 1 else float(v.ravel()[0])


def choose(scores: np.ndarray, current: int) -> tuple:
    """(chosen candidate, mean gain per candidate) from the per-sample scores ``[n, K]`` (module docstring)."""
    s = np.asarray(scores, np.float64)
    g = s[:, current:current + 1] - s
    n = s.shape[0]
    mean = g.mean(axis=0)
    se = g.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(mean.shape, np.inf)
    ok = (mean > Z * se) & (mean > MIN_GAIN * float(s[:, current].mean()))
    return (int(np.argmax(np.where(ok, mean, -np.inf))) if ok.any() else current), mean


class ActivationRangeChoice(Algorithm):
    """Clipping range and sign per activation quantizer, by the held-back consumer error (see module).
    Runs in ActivationGranularityChoice's stage (DefaultQuantization puts it right after that step)."""

    name = "ActivationRangeChoice"
    needs_float_model = True

    def __init__(self, params, context):
        super().__init__(params, context)
        self.requests: dict = {}

    def stage_samples(self, n):
        """This step scores on the first ``HELD_BACK`` samples only."""
        return HELD_BACK if n is None else min(n, HELD_BACK)

    def _request(self, graph: Graph, name: str, info: dict):
        fq = graph.node(name)
        shape = fq.input_value(0).get_partial_shape()
        lo, hi = _scalar(fq, 1), _scalar(fq, 2)
        if lo is None or hi is None or not shape.rank.is_static or shape.rank.get_length() < 2 or \
                _scalar(fq, 3) != lo or _scalar(fq, 4) != hi or not hi > lo:
            return None
        rank = shape.rank.get_length()
        axis = _axis(fq, rank)
        if not shape[axis].is_static:
            return None
        c = shape[axis].get_length()
        cands = candidates(lo, hi, info["unsigned_ok"])
        src = fq.input_value(0)
        st = Statistic.make(TensorRef(src.get_node().get_friendly_name(), src.get_index()), "fq_channel_error",
                            None, axis, {"lows": tuple((k[0],) for k in cands), "highs": tuple((k[1],) for k in cands),
                                         "levels": int(fq.get_attributes()["levels"]), "axis": axis,
                                         "max_positions": MAX_POSITIONS})
        return {"stat": st, "cands": cands, "energy": consumer_energy(fq, axis, c), "channels": c,
                "group": info["group"], "current": FACTORS.index(1.0)}

    def statistics(self, graph: Graph):
        for name, info in self.context.state(STATE, dict).items():
            if graph.has_node(name) and graph.node(name).get_type_name() == "FakeQuantize":
                r = self._request(graph, name, info)
                if r is not None:
                    self.requests[name] = r
                    yield r["stat"]

    def _units(self) -> list:
        """Lists of quantizer names that share one candidate (unified-scale groups; else one each)."""
        groups: dict = {}
        for name, r in self.requests.items():
            groups.setdefault(name if r["group"] is None else ("group", r["group"]), []).append(name)
        return list(groups.values())

    def apply(self, graph: Graph, stats) -> dict:
        report, changed = [], []
        for names in self._units():
            rs = [self.requests[n] for n in names]
            if any(_scalar(graph.node(n), 1) is None for n in names) or len({len(r["cands"]) for r in rs}) > 1:
                continue   # turned per channel meanwhile, or group members with different candidates
            total = 0.0
            for r in rs:
                err = np.asarray(stats[r["stat"]], np.float64)
                err = err.reshape(-1, r["channels"], len(r["cands"]))
                total = total + np.einsum("sck,c->sk", np.where(np.isfinite(err), err, 0.0), r["energy"])
            k, gain = choose(total, rs[0]["current"])
            lo, hi, f, uns = rs[0]["cands"][k]
            cur = float(np.mean(total[:, rs[0]["current"]]))
            entry = {"names": names, "factor": f, "unsigned": bool(uns), "changed": k != rs[0]["current"],
                     "relative_gain": float(gain[k] / cur) if cur > 0 else 0.0}
            report.append(entry)
            if k != rs[0]["current"]:
                old = [(n, _scalar(graph.node(n), 1), _scalar(graph.node(n), 2)) for n in names]
                changed.append((entry, old))
                for n in names:
                    _set_range(graph, graph.node(n), lo, hi)
        check = self._check(graph, changed)
        n = sum(e["changed"] for e in report)
        chosen = n + check["n_reverted"]
        return {"choices": report, "n_changed": n, "n_scored": len(report),
                "n_unsigned": sum(e["changed"] and e["unsigned"] for e in report), "check": check,
                "summary": f"{chosen} of {len(report)} activation range(s) chosen by their held-back consumer error "
                           f"({HELD_BACK} samples); {n} kept, {check['n_reverted']} reverted by the model's output "
                           f"error ({check['samples']} other samples)"}

    def _check(self, graph: Graph, changed: list) -> dict:
        """Keep a change only where the whole model's output error falls (module docstring, "Check")."""
        import time

        t0 = time.perf_counter()
        out = {"n_reverted": 0, "samples": 0, "probe_runs": 0, "groups": []}
        data, ref = self.context.calibration, self.context.float_model
        if not changed or data is None or ref is None:
            return out
        rows = list(take(open_source(data, list(ref.inputs)), HELD_BACK + CHECK_SAMPLES))
        rows = rows[HELD_BACK:] if len(rows) >= HELD_BACK + CHECK_MIN else rows[:CHECK_SAMPLES]
        order = {nd.get_friendly_name(): i for i, nd in enumerate(graph.model.get_ordered_ops())}
        changed = sorted(changed, key=lambda c: min(order.get(n, 0) for n, _, _ in c[1]))
        groups = np.array_split(np.arange(len(changed)), min(len(changed), CHECK_GROUPS))
        probe = _probe_model(graph.model, [old for _, old in changed], groups)
        board = OutputProbe(probe, len(groups), ref, rows)
        cfg = np.zeros(len(groups), bool)
        base = board.errors(cfg)
        first = float(base.mean())
        for g in range(len(groups)):
            trial = cfg.copy()
            trial[g] = True
            e = board.errors(trial)
            gain = base - e
            se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else np.inf
            keep = bool(gain.mean() > CHECK_Z * se and gain.mean() > 0)
            out["groups"].append({"size": len(groups[g]), "kept": keep, "error_before": float(base.mean()),
                                  "error_with": float(e.mean())})
            if keep:
                cfg, base = trial, e
        for g in np.flatnonzero(~cfg):
            for j in groups[g]:
                entry, old = changed[j]
                entry["changed"], entry["reverted"] = False, True
                for n, lo, hi in old:
                    _set_range(graph, graph.node(n), lo, hi)
                out["n_reverted"] += 1
        out.update(samples=board.samples, probe_runs=board.runs, error_unchanged=first,
                   error_chosen=float(base.mean()), seconds=round(time.perf_counter() - t0, 3))
        return out


def _probe_model(model, olds: list, groups: list):
    """A clone of ``model`` in which switch ``g`` selects, for the quantizers of the changes in group ``g``,
    the new range (True) or the old one (False)."""
    import openvino.opset13 as ops

    probe = model.clone()
    g2 = Graph(probe)
    sws = add_switches(probe, len(groups))
    for g, members in enumerate(groups):
        for j in members:
            for n, lo, hi in olds[j]:
                fq = g2.node(n)
                readers = list(fq.output(0).get_target_inputs())
                consts = [ops.constant(np.full(fq.input_value(p).get_shape(), v, np.float32))
                          for p, v in ((1, lo), (2, hi), (3, lo), (4, hi))]
                old = ops.fake_quantize(fq.input_value(0), *consts, int(fq.get_attributes()["levels"]))
                sel = ops.select(sws[g], fq.output(0), old.output(0))
                for r in readers:
                    r.replace_source_output(sel.output(0))
    return probe


def _set_range(graph: Graph, fq, lo: float, hi: float) -> None:
    import openvino.opset13 as ops
    for port, v in ((1, lo), (2, hi), (3, lo), (4, hi)):
        shape = fq.input_value(port).get_shape()
        fq.input(port).replace_source_output(ops.constant(np.full(shape, v, np.float32)).output(0))
    graph.invalidate()


@hookimpl
def register_algorithms(register):
    register(ActivationRangeChoice)
