"""SlowInt8Check: keep in float the ops whose int8 form is slower than float on the CPU that runs them.

An INT8 model is not always faster: on CPUs without VNNI (AVX2 only) oneDNN emulates int8 matrix products
(``jit_gemm_i8`` instead of ``brgemm``), and even with VNNI small models with many depthwise convolutions
run slower in int8 (dequantize and reorder nodes around convolutions the plugin keeps in f32: face mesh
and BlazeFace at 0.8x FP32's speed). The quantizers are grouped by the op types that read them
(``MatMul``, ``Convolution``, ...; a quantizer read by several types forms its own group ``A+B``). Two
ways to pick what is kept in float:

* the target file lists op types (``slow_int8_operations``, for deployment on another CPU), or
* the host is timed (the target is the CPU plugin and ``skip_slow_int8`` is not false), with or without
  VNNI. The FP32 model (the model as the run received it) and full INT8 are compiled (latency hint, f32
  inference precision) and run on the first calibration sample in ``R`` interleaved rounds of ``n``
  inferences each. When INT8 is faster (test below) nothing changes; when FP32 is faster by the same
  test, every quantizer goes back to float (mixes of int8 and float ops were slower than full INT8
  wherever FP32 beat it on the zoo: float islands between int8 convolutions add reorders). Between the
  two (within noise), candidates are timed against full INT8: per
  compute op type ``T`` of the model (``COMPUTE``: convolutions, MatMul, attention, recurrent sequences),
  INT8 with every group that ``T`` reads in float; and FP32 itself (every quantizer in float). Where the
  first timing's median already has FP32 faster by the margin, FP32 is the only candidate (for the reason
  above: no mix beat full INT8 where FP32 did), which saves compiling the mixes. The
  fastest candidate that passes is kept. With ``t_m(r)`` the mean time per inference of model ``m`` in
  round ``r``, candidate ``g`` passes when

  ``median_r t_g(r) / t_int8(r) <= 1 - margin``,  ``min_r t_g(r) / min_r t_int8(r) <= 1 - margin``

  (paired per round, and on the least disturbed round: other processes only ever add time) and
  ``t_g(r) < t_int8(r)`` in at least ``AGREE`` of the rounds; INT8 is "faster" than FP32 by the same
  test. FP32 as a candidate is judged on the rounds of both timings (twice the evidence where the first
  was not decisive). When no candidate passes, INT8 is still not kept where it is slower than FP32: FP32 is
  kept when the paired test alone holds for it on the rounds of both timings,
  ``median_r t_fp32(r) / t_int8(r) <= 1 - margin`` over the 14 rounds (in most of them FP32 is faster by the
  margin), without the minima and the agreement. Without this rule a model whose INT8 form is 10 to 20%
  slower kept INT8 in about one run of four (face-det-short: one round disturbed on FP32's side breaks the
  agreement, one undisturbed INT8 round as fast as FP32's best breaks the minima), so the default's model,
  and its accuracy, depended on noise. ``n`` is chosen so that all rounds take about ``budget`` seconds (a
  share of one FP32 pass over the calibration subset). The report gives each ratio (median, min, max over
  the rounds) and, when something was kept in float, the speed of the result against FP32 and full INT8, measured the same way.

Keeping a group in float removes its FakeQuantizes (the readers read their input again, weights get their
FP32 values back, and a layer left with no quantizer its FP32 bias); keeping FP32 makes the model the FP32
model as the run received it.
"""
import time
from collections import defaultdict
from typing import Optional

import numpy as np
import openvino as ov

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.hwtarget import native_int8

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


#: environment variable giving the default of ``skip_slow_int8`` where the config leaves it unset
ENV = "OVQUANT_SKIP_SLOW_INT8"


def setting(params) -> Optional[bool]:
    """``skip_slow_int8`` as the run uses it: the config's value, else ``$OVQUANT_SKIP_SLOW_INT8``
    (``false``: never time, for outputs that do not depend on the host's speed; ``true``), else None (time
    where the target is the CPU)."""
    v = getattr(params, "skip_slow_int8", None)
    if v is not None:
        return v
    import os

    env = os.environ.get(ENV, "").strip().lower()
    if env in ("", "auto", "none", "null"):
        return None
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    from ovquant.errors import ConfigError

    raise ConfigError(f"environment variable {ENV}={os.environ[ENV]!r}: expected true or false")


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


def without(model: ov.Model, names, fp32: Optional[ov.Model] = None) -> ov.Model:
    """A copy of ``model`` with the FakeQuantizes ``names`` removed (weights and biases from ``fp32``)."""
    from ovquant.accuracy_control import revert

    m = model.clone()
    revert(m, list(names), fp32)
    return m


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


def compile_all(models: dict) -> dict:
    """``{name: compiled model}`` for the CPU with the timing config, two at a time (compiling releases
    the GIL); values already compiled are kept."""
    from concurrent.futures import ThreadPoolExecutor

    core = ov.Core()
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(models, pool.map(lambda m: m if isinstance(m, ov.CompiledModel) else
                                         core.compile_model(m, "CPU", _CFG), models.values())))


def time_models(models: dict, feed: dict, budget, rounds: int = ROUNDS) -> tuple:
    """``({name: [seconds per inference in each round]}, budget used)``, the models interleaved within
    every round; ``budget`` is seconds, or a function of the first model's time per inference. A value of
    ``models`` is an ``ov.Model`` (compiled here) or an already compiled model. ``feed`` is copied into
    each request's input tensors once; the timed inferences pass no inputs, so the per-call cost of
    converting a feed (about as long as a whole inference of a tiny model) is not timed."""
    reqs = {k: c.create_infer_request() for k, c in compile_all(models).items()}
    one = {}
    for k, r in reqs.items():
        r.infer(feed)                  # the feed stays in the request's input tensors: timed calls pass none
        t0 = time.perf_counter()
        r.infer()
        one[k] = time.perf_counter() - t0
    budget = budget(next(iter(one.values()))) if callable(budget) else budget
    n = max(1, int(budget / (rounds * max(sum(one.values()), 1e-6))))
    times = {k: [] for k in reqs}
    for _ in range(rounds):
        for k, r in reqs.items():
            t0 = time.perf_counter()
            for _ in range(n):
                r.infer()
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
    needs_float_model = True

    def apply(self, graph, stats) -> dict:
        t0 = time.perf_counter()
        model = graph.model
        every = quantizer_groups(model)
        groups = {g: v for g, v in every.items() if set(g.split("+")) & COMPUTE}
        listed = tuple(getattr(self.context.target, "slow_int8_operations", ()) or ())
        if listed:
            keep = [g for g in groups if set(g.split("+")) & set(listed)]
            entry = {"how": "target file (slow_int8_operations)", "listed": list(listed)}
        else:
            entry = self._time_host(model, groups, every)
            keep = entry.pop("keep", [])
        names = [n for g in keep for n in every[g]]
        if entry.get("candidate") == "fp32":
            graph.model = self.context.float_model.clone()   # exactly the FP32 model (channel alignment too)
            entry["whole_model_float"] = True   # If bodies stay float too (core/bodies.py)
        elif names:
            from ovquant.accuracy_control import revert

            revert(model, names, self.context.float_model)
        entry.update(kept_in_float=keep, n_kept_in_float=len(names), check_seconds=round(time.perf_counter() - t0, 3))
        entry["summary"] = _summary(entry)
        if keep or "int8_over_fp32" in entry:
            entry["notice"] = entry["summary"]   # printed by the CLI
        return entry

    def _feed(self, model: ov.Model) -> Optional[dict]:
        """The first calibration sample as the model's feed, else :func:`synthetic_feed`."""
        from ovquant.dataset import FeedBuilder, open_source, take

        try:
            first = next(iter(take(open_source(self.context.calibration, list(model.inputs)), 1)))
            return FeedBuilder(model.inputs)(first, 0)
        except Exception:
            return synthetic_feed(model)

    def _time_host(self, model: ov.Model, groups: dict, every: dict) -> dict:
        if getattr(self.context.target, "name", None) != "CPU":
            return {"how": "not timed: the target is not this host's CPU"}
        isa = native_int8()
        feed = self._feed(model)
        if feed is None or not groups:
            return {"how": "not timed: " + ("no input to time with" if feed is None else "no quantizers")}
        fp32 = self.context.float_model   # kept by the pipeline: the step declares needs_float_model
        base = compile_all({"fp32": fp32, "int8": model})
        times, budget = time_models(base, feed, self._budget)
        entry = {"how": "timed on this host", "isa": isa or "no VNNI", "budget_seconds": round(budget, 3),
                 "rounds": ROUNDS, "margin": MARGIN, "int8_over_fp32": compare(times, "int8", "fp32"), "keep": []}
        if pays_off(compare(times, "int8", "fp32")):
            return entry                       # INT8 pays as a whole: no candidate is timed
        if pays_off(compare(times, "fp32", "int8")):   # FP32 clearly faster: no mix of int8 and float is timed
            entry.update(keep=list(every), candidate="fp32", result_over_fp32=compare(times, "fp32", "fp32"))
            return entry
        types = sorted({t for g in groups for t in g.split("+") if t in COMPUTE})
        cands = {t: [g for g in groups if t in g.split("+")] for t in types}
        if len(types) == 1 or compare(times, "fp32", "int8")["median"] <= 1 - MARGIN:
            cands = {}                         # FP32 alone: one type, or FP32 ahead on the median (docstring)
        cands["fp32"] = list(every)
        models = {**base, **{c: without(model, [n for g in gs for n in every[g]], fp32)
                             for c, gs in cands.items() if c != "fp32"}}
        again, _ = time_models(models, feed, budget)
        ratios = {c: compare(again, c, "int8") for c in cands}
        both = {k: times[k] + again[k] for k in ("fp32", "int8")}
        ratios["fp32"] = compare(both, "fp32", "int8")   # both timings
        good = [c for c in cands if pays_off(ratios[c])]
        entry.update(float_over_int8=ratios, int8_over_fp32=compare(again, "int8", "fp32"),
                     int8_over_fp32_first=entry["int8_over_fp32"])
        if not good and ratios["fp32"]["median"] <= 1 - MARGIN:   # never slower than FP32 (module docstring)
            good = ["fp32"]
            entry.update(never_slower=True, int8_over_fp32=compare(both, "int8", "fp32"))
        if good:
            best = min(good, key=lambda c: ratios[c]["median"])
            entry["keep"], entry["candidate"] = cands[best], best
            entry["result_over_fp32"] = compare(again, best, "fp32")
        return entry

    def _budget(self, one: float) -> float:
        return budget_seconds(one, getattr(self.params, "stat_subset_size", None) or 300)


def budget_seconds(one: float, subset_size: int) -> float:
    """Seconds of timed rounds: a twentieth of one FP32 pass (``one`` s per sample) over the calibration
    subset of ``subset_size`` samples, 0.2 s to 2 s."""
    return float(min(2.0, max(0.2, 0.05 * subset_size * one)))


def _summary(entry: dict) -> str:
    if not entry["kept_in_float"]:
        r = entry.get("int8_over_fp32")
        tail = f"; INT8 at {1 / r['median']:.2f}x FP32's speed (rounds {1 / r['max']:.2f}-{1 / r['min']:.2f})" if r else ""
        if "float_over_int8" in entry:
            return (f"INT8 kept: neither it nor FP32 is clearly faster, and no op type in float was faster "
                    f"than full INT8 ({entry['how']}){tail}")
        return f"every int8 op group pays ({entry['how']}){tail}"
    if entry.get("candidate") == "fp32":
        q = entry["int8_over_fp32"]
        rounds = "both timings' rounds" if entry.get("never_slower") else "rounds"
        return (f"INT8 does not pay on this CPU (full INT8 at {1 / q['median']:.2f}x FP32's speed, {rounds} "
                f"{1 / q['max']:.2f}-{1 / q['min']:.2f}; {entry['how']}): every quantizer ({entry['n_kept_in_float']}) "
                f"kept in float, the model stays FP32 (skip_slow_int8=false or --no-skip-slow-int8 keeps INT8)")
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
