#!/usr/bin/env python3
"""How much the ovquant statistics engine costs over plain OpenVINO inference (imagenet-lite0 by default).

    python benchmarks/engine_overhead.py [--case imagenet-lite0] [--data DIR] [--n 300] [--rounds 3]
                                         [--out FILE.json] [--doc docs/benchmarks.md]

The case's calibration rows are loaded into memory ONCE (np.load of calib.npz), so reading and
decompressing are outside every timing. Then, interleaved for ``--rounds`` rounds (order rotating):

* ``plain_throughput``: compile (CPU, INFERENCE_PRECISION_HINT f32, PERFORMANCE_HINT THROUGHPUT, as the
  engine compiles) + an ``AsyncInferQueue`` loop over the n samples with OPTIMAL_NUMBER_OF_INFER_REQUESTS
  requests, no callback;
* ``plain_throughput_cb``: the same with a callback copying the first output (what a consumer of the
  results does at the least);
* ``plain_latency``: f32 + PERFORMANCE_HINT LATENCY (one stream using every core) + the same loop;
* ``plain_default``: compile with the default config ({}) + the same loop (on a CPU with bf16 support
  the default inference precision is bf16, so this one is not f32: see its ``precision``);
* ``engine_minmax``: ``Engine().collect(model, stats, samples, n)`` with a per-tensor min (min over
  samples) and max (max over samples) of every tensor MinMaxQuantization quantizes (its plan:
  ``find_quantizers`` with default params on the CPU target);
* ``engine_all``: the same for every float output of every op except Constant and Result.

Each plain run reports compile and loop time separately; each engine run reports its collect() time
and, from a timing proxy around its ov.Core, the compile time inside it. Prints ONE JSON line with all
times, their medians and the ratios engine/plain; ``--out`` also writes it to a file and ``--doc`` puts a
table into that markdown file (section ``engine_overhead``, replaced on the next run).
"""
import argparse
import datetime
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import calib_rows, default_dir  # noqa: E402


class TimedCore:
    """Delegates to an ov.Core and adds up the time spent in compile_model."""

    def __init__(self, core):
        self._core = core
        self.compile_s = 0.0

    def compile_model(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self._core.compile_model(*args, **kwargs)
        finally:
            self.compile_s += time.perf_counter() - t

    def __getattr__(self, name):
        return getattr(self._core, name)


def plain_loop(core, model, samples, config, callback=False):
    import openvino as ov

    t0 = time.perf_counter()
    cm = core.compile_model(model, "CPU", config)
    t1 = time.perf_counter()
    nreq = int(cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(cm, nreq)
    sink = []
    if callback:
        queue.set_callback(lambda req, i: sink.append(np.array(req.get_output_tensor(0).data)))
    for i, s in enumerate(samples):
        queue.start_async(s, userdata=i)
    queue.wait_all()
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "compile_s": t1 - t0, "loop_s": t2 - t1, "n_requests": nreq,
            "hint": str(cm.get_property("PERFORMANCE_HINT")),
            "precision": str(cm.get_property("INFERENCE_PRECISION_HINT"))}


def minmax_tensors(model):
    """The (node, port) of every activation MinMaxQuantization quantizes, from its own plan."""
    from ovquant.plugins.algorithms.params import QuantizationParams
    from ovquant.graph import Graph
    from ovquant.plugins.algorithms.placement import find_quantizers
    from ovquant.registry import lookup

    target = lookup("hw_targets", "CPU")
    qs, _, _ = find_quantizers(Graph(model), target, QuantizationParams())
    return sorted({tuple(q.source) for q in qs if q.kind == "activations"}), len(qs)


def all_float_tensors(model):
    import openvino as ov

    floats = {ov.Type.f32, ov.Type.f16, ov.Type.bf16, ov.Type.f64}
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Result"):
            continue
        for i in range(op.get_output_size()):
            o = op.output(i)
            if o.get_element_type() in floats and o.get_partial_shape().rank.is_static:
                out.append((op.get_friendly_name(), i))
    return out


def min_max_stats(tensors):
    from ovquant.statistics import Statistic, TensorRef

    stats = []
    for node, port in tensors:
        t = TensorRef(node, port)
        stats.append(Statistic.make(t, "min", "min", None, {"side": "min"}))
        stats.append(Statistic.make(t, "max", "max", None, {"side": "max"}))
    return stats


def engine_run(model, stats, samples, n):
    import openvino as ov
    from ovquant.engine import Engine

    core = TimedCore(ov.Core())
    eng = Engine(core=core)
    t = time.perf_counter()
    out = eng.collect(model, stats, samples, n)
    secs = time.perf_counter() - t
    assert len(out) == len(set(stats)), (len(out), len(stats))
    return {"seconds": secs, "compile_s": core.compile_s, "rest_s": secs - core.compile_s,
            **{k: v for k, v in eng.last_run.items() if k not in ("stage", "seconds")}}


def interleaved(variants: dict, rounds: int) -> tuple:
    """Run every variant (a callable returning a dict of numbers) once per round, the order rotating each
    round; return ``(runs, medians)``: every run's dict per variant, and per variant the median of each
    numeric key over the rounds."""
    names = list(variants)
    runs = {k: [] for k in names}
    for r in range(rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            runs[name].append(variants[name]())
    med = {name: {key: round(statistics.median(x[key] for x in rs), 4) for key in rs[0]
                  if isinstance(rs[0][key], (int, float)) and not isinstance(rs[0][key], bool)}
           for name, rs in runs.items()}
    return runs, med


def render(res):
    m = res["median"]
    prec = {k: str(v[0].get("precision", "")).replace("<Type: '", "").replace("'>", "") for k, v in res["runs"].items()}
    rows = [("plain_throughput", "plain AsyncInferQueue, f32 + THROUGHPUT hint (as the engine compiles)"),
            ("plain_throughput_cb", "same + callback copying the output"),
            ("plain_latency", "plain AsyncInferQueue, f32 + LATENCY hint"),
            ("plain_default", f"plain AsyncInferQueue, default config (precision {prec.get('plain_default')}, "
                              f"hint {res['runs']['plain_default'][0].get('hint')})"),
            ("engine_minmax", f"Engine.collect: min+max of the {res['n_minmax_activation_tensors']} tensors MinMax quantizes"),
            ("engine_all", f"Engine.collect: min+max of all {res['n_all_float_tensors']} float op outputs")]
    lines = [f"## Engine overhead ({res['case']}, {res['n_samples']} calibration samples)", "",
             f"Run {res['date']}, `benchmarks/engine_overhead.py`: samples preloaded in memory; the variants "
             f"interleaved, {res['rounds']} rounds, medians; {res['nproc']} cores. *compile* is compile_model "
             "(inside collect() for the engine: the statistics model), *rest* is everything else (inference loop; "
             "for the engine also cloning, planning and aggregation). Ratios: engine time over the plain f32 "
             "THROUGHPUT loop. Raw JSON: `" + res.get("json_path", "") + "`.", "",
             "| variant | requests | total s | compile s | rest s | x plain f32 THROUGHPUT (total / rest only) |",
             "|---|---|---|---|---|---|"]
    base = m["plain_throughput"]
    for key, label in rows:
        v = m[key]
        rest = v.get("loop_s", v.get("rest_s"))
        lines.append(f"| {label} | {int(v['n_requests'])} | {v['seconds']:.2f} | {v['compile_s']:.2f} | {rest:.2f} "
                     f"| {v['seconds'] / base['seconds']:.2f}x / {rest / base['loop_s']:.2f}x |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="imagenet-lite0")
    ap.add_argument("--data", default=default_dir())
    ap.add_argument("--n", type=int, default=300, help="calibration samples (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    ap.add_argument("--doc", default=None, help="put a table into this markdown file (e.g. docs/benchmarks.md)")
    a = ap.parse_args()

    import openvino as ov

    core = ov.Core()
    d = os.path.join(a.data, a.case)
    model = core.read_model(os.path.join(d, "model.xml"))
    samples = calib_rows(model.inputs, os.path.join(d, "calib.npz"), a.n)
    n = len(samples)
    mm, n_quantizers = minmax_tensors(model)
    every = all_float_tensors(model)
    stats_mm, stats_all = min_max_stats(mm), min_max_stats(every)

    f32_tp = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}
    variants = {
        "plain_throughput": lambda: plain_loop(core, model, samples, f32_tp),
        "plain_throughput_cb": lambda: plain_loop(core, model, samples, f32_tp, callback=True),
        "plain_latency": lambda: plain_loop(core, model, samples, {"INFERENCE_PRECISION_HINT": "f32",
                                                                   "PERFORMANCE_HINT": "LATENCY"}),
        "plain_default": lambda: plain_loop(core, model, samples, {}),
        "engine_minmax": lambda: engine_run(model, stats_mm, samples, n),
        "engine_all": lambda: engine_run(model, stats_all, samples, n),
    }
    runs, med = interleaved(variants, a.rounds)
    ratios = {}
    for e in ("engine_minmax", "engine_all"):
        for p in ("plain_throughput", "plain_throughput_cb", "plain_latency", "plain_default"):
            ratios[f"{e}/{p}"] = round(med[e]["seconds"] / med[p]["seconds"], 3)
        ratios[f"{e}/plain_throughput (compile excluded)"] = round(
            med[e]["rest_s"] / med["plain_throughput"]["loop_s"], 3)
    res = {"case": a.case, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "n_samples": n, "rounds": a.rounds, "nproc": os.cpu_count(), "openvino": ov.__version__,
           "n_minmax_quantizers": n_quantizers, "n_minmax_activation_tensors": len(mm),
           "n_all_float_tensors": len(every), "n_stats": {"engine_minmax": len(stats_mm), "engine_all": len(stats_all)},
           "median": med, "ratios": ratios,
           "runs": {k: [{kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in x.items()} for x in v]
                    for k, v in runs.items()}}
    from bench import publish
    publish(res, a.out, a.doc, "engine_overhead", render)

if __name__ == "__main__":
    main()
