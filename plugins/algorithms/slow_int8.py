"""SlowInt8Check: keep in float the ops whose int8 form is slower than float on the CPU that runs them.

On CPUs without VNNI (AVX2 only) oneDNN's int8 matrix products are emulated (``jit_gemm_i8`` instead
of ``brgemm``), and a whole op type can be slower in int8 than in float. The quantizers are grouped by
the op type that reads them (``MatMul``, ``Convolution``, ``ScaledDotProductAttention``, ...; a quantizer
read by several types forms its own group ``A+B``). Two ways to pick the groups kept in float:

* the target file lists them (``slow_int8_operations``: op types, for deployment on another CPU), or
* the host is timed (the target is the CPU plugin, ``skip_slow_int8`` not false, and the CPU has no
  native int8 dot product, :func:`native_int8`; ``skip_slow_int8=True`` times it anyway): FP32 and
  full INT8 are compiled (latency hint, f32 inference precision) and run on one synthetic input in
  ``R`` interleaved rounds of ``n`` inferences each. When INT8 is not faster (test below), so are, per
  group ``g``, INT8 with ``g`` in float, and INT8 with every timed group in float; the fastest
  candidate that passes is kept. With ``t_m(r)`` the mean time per inference of model ``m`` in round
  ``r``, candidate ``g`` passes when

  ``median_r t_g(r) / t_int8(r) <= 1 - margin``,  ``min_r t_g(r) / min_r t_int8(r) <= 1 - margin``

  (paired per round, and on the least disturbed round: other processes only ever add time) and
  ``t_g(r) < t_int8(r)`` in at least ``AGREE`` of the rounds. Only groups read by a compute op
  (``COMPUTE``: convolutions, MatMul, attention, recurrent sequences) are timed. ``n`` is
  chosen so that all rounds take about ``budget`` seconds (a share of one FP32 pass over the
  calibration subset). The report gives each group's ratios (median, min, max over the rounds) and,
  when groups were kept, the speed of the result against FP32 and full INT8, measured the same way.

Keeping a group in float removes its FakeQuantizes (the readers read their input again); a bias
corrected for the quantized weights stays.
"""
import time
from collections import defaultdict
from typing import Optional

import numpy as np
import openvino as ov

from ovquant import hookimpl
from ovquant.algorithm import Algorithm

#: a group must be at least this much faster in float (both tests above) to be kept in float
MARGIN = 0.05
ROUNDS = 7
#: of the rounds, at least this share must have float faster than int8
AGREE = 0.8
#: the op types worth timing: the int8 kernels of the CPU plugin (other readers stay int8)
COMPUTE = frozenset({"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                     "MatMul", "ScaledDotProductAttention", "LSTMSequence", "GRUSequence", "RNNSequence"})
_CFG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
_PASS = ("Reshape", "Transpose", "Convert", "Squeeze", "Unsqueeze", "FakeQuantize")


def _reader_types(out: ov.Output) -> set:
    """Op types that read ``out`` (looking through reshapes, converts and FakeQuantizes)."""
    found, frontier = set(), [out]
    for _ in range(4):
        nxt = []
        for o in frontier:
            for r in o.get_target_inputs():
                n = r.get_node()
                (nxt.extend(n.outputs()) if n.get_type_name() in _PASS else found.add(n.get_type_name()))
        frontier = nxt
    return found


def quantizer_groups(model: ov.Model) -> dict:
    """``{group: [FakeQuantize names]}``, a group being the sorted op types reading the quantizer."""
    groups = defaultdict(list)
    for n in model.get_ordered_ops():
        if n.get_type_name() == "FakeQuantize":
            groups["+".join(sorted(_reader_types(n.output(0)))) or "none"].append(n.get_friendly_name())
    return dict(groups)


def without(model: ov.Model, names) -> ov.Model:
    """A copy of ``model`` with the FakeQuantizes ``names`` removed."""
    from ovquant.accuracy_control import revert

    m = model.clone()
    revert(m, list(names))
    return m


def native_int8() -> str:
    """The CPU's native int8 dot-product flag (``avx512_vnni``, ``avx_vnni``, ``amx_int8``), or "" when
    it has none or oneDNN is capped below it (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA``)."""
    import os

    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap and cap not in ("ALL", "DEFAULT") and "VNNI" not in cap and "AMX" not in cap:
        return ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = set(f.read().split())
    except OSError:
        return ""
    return next((fl for fl in ("amx_int8", "avx512_vnni", "avx_vnni") if fl in flags), "")


def synthetic_feed(model: ov.Model) -> Optional[dict]:
    """One input per model input (zeros for integers, uniform [0, 1) floats); None for dynamic shapes."""
    rng = np.random.default_rng(0)
    feed = {}
    for i, inp in enumerate(model.inputs):
        if inp.get_partial_shape().is_dynamic:
            return None
        dt = inp.get_element_type().to_dtype()
        shape = list(inp.get_shape())
        feed[i] = np.zeros(shape, dt) if dt.kind in "iub" else rng.random(shape).astype(dt)
    return feed


def time_models(models: dict, feed: dict, budget, rounds: int = ROUNDS) -> tuple:
    """``({name: [seconds per inference in each round]}, budget used)``, the models interleaved within
    every round; ``budget`` is seconds, or a function of the first model's time per inference."""
    core = ov.Core()
    reqs = {k: core.compile_model(m, "CPU", _CFG).create_infer_request() for k, m in models.items()}
    one = {}
    for k, r in reqs.items():
        r.infer(feed)
        t0 = time.perf_counter()
        r.infer(feed)
        one[k] = time.perf_counter() - t0
    budget = budget(next(iter(one.values()))) if callable(budget) else budget
    n = max(1, int(budget / (rounds * max(sum(one.values()), 1e-6))))
    times = {k: [] for k in reqs}
    for _ in range(rounds):
        for k, r in reqs.items():
            t0 = time.perf_counter()
            for _ in range(n):
                r.infer(feed)
            times[k].append((time.perf_counter() - t0) / n)
    return times, budget


def compare(times: dict, name: str, base: str) -> dict:
    """Time of ``name`` over time of ``base``: per-round ratios' median, min and max, ratio of minima."""
    a, b = np.array(times[name]), np.array(times[base])
    r = a / b
    return {"median": round(float(np.median(r)), 3), "min": round(float(r.min()), 3),
            "max": round(float(r.max()), 3), "of_minima": round(float(a.min() / b.min()), 3),
            "rounds_faster": round(float((r < 1).mean()), 3)}


def pays_off(ratio: dict, margin: float = MARGIN) -> bool:
    """Float is faster by at least ``margin`` paired per round and on the fastest rounds, and faster in
    at least ``AGREE`` of the rounds."""
    return ratio["median"] <= 1 - margin and ratio["of_minima"] <= 1 - margin and ratio["rounds_faster"] >= AGREE


class SlowInt8Check(Algorithm):
    """Keeps in float the op groups whose int8 form is slower on the target CPU (module docstring)."""

    name = "SlowInt8Check"

    def apply(self, graph, stats) -> dict:
        t0 = time.perf_counter()
        model = graph.model
        groups = {g: v for g, v in quantizer_groups(model).items() if set(g.split("+")) & COMPUTE}
        listed = tuple(getattr(self.context.target, "slow_int8_operations", ()) or ())
        if listed:
            keep = [g for g in groups if set(g.split("+")) & set(listed)]
            entry = {"how": "target file (slow_int8_operations)", "listed": list(listed)}
        else:
            entry = self._time_host(model, groups)
            keep = entry.pop("keep", [])
        names = [n for g in keep for n in groups[g]]
        if names:
            from ovquant.accuracy_control import revert

            revert(model, names)
        entry.update(kept_in_float=keep, n_kept_in_float=len(names), check_seconds=round(time.perf_counter() - t0, 3))
        entry["summary"] = _summary(entry)
        if keep or "int8_over_fp32" in entry:
            entry["notice"] = entry["summary"]   # printed by the CLI
        return entry

    def _time_host(self, model: ov.Model, groups: dict) -> dict:
        if getattr(self.context.target, "name", None) != "CPU":
            return {"how": "not timed: the target is not this host's CPU"}
        isa = native_int8()
        if isa and getattr(self.params, "skip_slow_int8", None) is None:
            return {"how": f"not timed: this CPU has native int8 ({isa})", "isa": isa}
        feed = synthetic_feed(model)
        if feed is None or not groups:
            return {"how": "not timed: " + ("dynamic input shapes" if feed is None else "no quantizers")}
        fp32 = without(model, [n for g in groups.values() for n in g])
        times, budget = time_models({"fp32": fp32, "int8": model}, feed, self._budget)
        entry = {"how": "timed on this host", "isa": isa or "no VNNI", "budget_seconds": round(budget, 3),
                 "rounds": ROUNDS, "margin": MARGIN, "int8_over_fp32": compare(times, "int8", "fp32"), "keep": []}
        if entry["int8_over_fp32"]["median"] <= 1 - MARGIN and entry["int8_over_fp32"]["rounds_faster"] >= AGREE:
            return entry                       # INT8 pays as a whole: no op group is timed
        cands = {g: [g] for g in groups}
        if len(groups) > 1:
            cands["all timed groups"] = list(groups)
        models = {"int8": model, **{c: without(model, [n for g in gs for n in groups[g]]) for c, gs in cands.items()}}
        again, _ = time_models({"fp32": fp32, **models}, feed, budget)
        ratios = {c: compare(again, c, "int8") for c in cands}
        good = [c for c in cands if pays_off(ratios[c])]
        entry.update(float_over_int8=ratios, int8_over_fp32=compare(again, "int8", "fp32"))
        if good:
            best = min(good, key=lambda c: ratios[c]["median"])
            entry["keep"] = cands[best]
            entry["result_over_fp32"] = compare(again, best, "fp32")
        return entry

    def _budget(self, one: float) -> float:
        """Seconds of timed rounds: a twentieth of one FP32 pass (``one`` s per sample) over the
        calibration subset, 0.2 s to 2 s."""
        n = getattr(self.params, "stat_subset_size", None) or 300
        return float(min(2.0, max(0.2, 0.05 * n * one)))


def _summary(entry: dict) -> str:
    if not entry["kept_in_float"]:
        r = entry.get("int8_over_fp32")
        tail = f"; INT8 at {1 / r['median']:.2f}x FP32's speed (rounds {1 / r['max']:.2f}-{1 / r['min']:.2f})" if r else ""
        return f"every int8 op group pays ({entry['how']}){tail}"
    s = f"kept in float {entry['n_kept_in_float']} quantizer(s) of {', '.join(entry['kept_in_float'])} ({entry['how']})"
    r = entry.get("result_over_fp32")
    if r:
        q = entry["int8_over_fp32"]
        s += (f"; speed vs FP32 {1 / r['median']:.2f}x (rounds {1 / r['max']:.2f}-{1 / r['min']:.2f}), "
              f"full INT8 {1 / q['median']:.2f}x")
    return s


@hookimpl
def register_algorithms(register):
    register(SlowInt8Check)
