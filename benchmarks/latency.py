#!/usr/bin/env python3
"""Interleaved single-sample synchronous latency of two or more OpenVINO IRs.

    python benchmarks/latency.py A.xml B.xml [C.xml ...] [--case CASE] [--data DIR] [--rounds 30]
                                 [--iters 0] [--warmup 20] [--threads 0] [--labels a,b,c]

Every model is compiled on the CPU plugin with INFERENCE_PRECISION_HINT=f32, PERFORMANCE_HINT=LATENCY and
the same INFERENCE_NUM_THREADS (0 = the plugin's choice). The models are measured interleaved: round r
times ``--iters`` synchronous infer() calls of A, then of B, then of C ... (the order rotates every round),
for ``--rounds`` rounds, so machine noise hits every model alike. ``--iters 0`` (default) picks one count
for all models so that a round of the slowest lasts about 30 ms (5..200). A round's value is the median of its
calls; the reported latency is the median over rounds. Inputs are one real sample (the case's first
calibration row) when --case is given, else random data of each input's shape and type.

Prints ONE JSON line {models: [{label, xml, median_ms, p10_ms, p90_ms, mean_ms, rounds_ms}], ratios: {...},
...}: ``ratios["a/b"]`` is median latency of a over b (below 1: a is faster); ``speedup["a_vs_b"]`` = b/a.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import calib_rows, default_dir  # noqa: E402


def make_feed(compiled, case, data):
    if case:
        return calib_rows(compiled.inputs, os.path.join(data, case, "calib.npz"), 1)[0]
    rng = np.random.default_rng(0)
    feed = {}
    for inp in compiled.inputs:
        shape = tuple(inp.get_shape())
        dt = inp.get_element_type().to_dtype()
        feed[inp.get_any_name()] = (rng.integers(0, 2, shape).astype(dt) if np.issubdtype(dt, np.integer)
                                    else rng.standard_normal(shape).astype(dt))
    return feed


def measure(xmls, labels=None, case=None, data=None, rounds=30, iters=10, warmup=20, threads=0):
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    labels = labels or [os.path.splitext(os.path.basename(x))[0] for x in xmls]
    if len(set(labels)) != len(labels):
        labels = [f"{l}#{i}" for i, l in enumerate(labels)]
    runs = []
    for lab, xml in zip(labels, xmls):
        cm = core.compile_model(xml, "CPU", cfg)
        req = cm.create_infer_request()
        feed = make_feed(cm, case, data or default_dir())
        for name, v in feed.items():
            req.set_tensor(name, ov.Tensor(v))
        ts = []
        for _ in range(warmup):
            t = time.perf_counter()
            req.infer()
            ts.append(time.perf_counter() - t)
        runs.append({"label": lab, "xml": os.path.abspath(xml), "req": req, "rounds": [],
                     "threads": cm.get_property("INFERENCE_NUM_THREADS"),
                     "warmup_ms": statistics.median(ts[len(ts) // 2:]) * 1e3 if ts else None})
    if not iters:  # auto: every model gets the same count, a round of the slowest lasting about 30 ms
        slowest = max((r["warmup_ms"] or 1.0) for r in runs)
        iters = int(min(200, max(5, round(30.0 / slowest))))
    n = len(runs)
    for r in range(rounds):
        for k in range(n):
            run = runs[(r + k) % n]
            req = run["req"]
            ts = []
            for _ in range(iters):
                t = time.perf_counter()
                req.infer()
                ts.append(time.perf_counter() - t)
            run["rounds"].append(statistics.median(ts) * 1e3)
    out = []
    for run in runs:
        v = run["rounds"]
        q = np.percentile(v, [10, 90])
        out.append({"label": run["label"], "xml": run["xml"], "median_ms": round(statistics.median(v), 4),
                    "p10_ms": round(float(q[0]), 4), "p90_ms": round(float(q[1]), 4),
                    "mean_ms": round(float(np.mean(v)), 4), "threads": run["threads"],
                    "warmup_ms": round(run["warmup_ms"], 4) if run["warmup_ms"] is not None else None,
                    "rounds_ms": [round(x, 4) for x in v]})
    med = {m["label"]: m["median_ms"] for m in out}
    ratios, speedup = {}, {}
    for a in med:
        for b in med:
            if a != b:
                ratios[f"{a}/{b}"] = round(med[a] / med[b], 4)
                speedup[f"{a}_vs_{b}"] = round(med[b] / med[a], 4)
    return {"models": out, "median_ms": med, "ratios": ratios, "speedup": speedup, "rounds": rounds,
            "iters_per_round": iters, "warmup": warmup, "threads_setting": threads, "nproc": os.cpu_count(),
            "config": cfg, "openvino": ov.__version__, "input": f"{case} calib row 0" if case else "random"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="two or more IR .xml files")
    ap.add_argument("--labels", default=None, help="comma-separated labels (default: file stems)")
    ap.add_argument("--case", default=None, help="feed the case's first calibration row (default: random data)")
    ap.add_argument("--data", default=default_dir())
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--iters", type=int, default=0,
                    help="infer() calls per model per round (0, default: about 30 ms of the slowest model, 5..200)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS for every model (0: plugin default)")
    a = ap.parse_args()
    if len(a.models) < 2:
        ap.error("give two or more models")
    labels = a.labels.split(",") if a.labels else None
    if labels is not None and len(labels) != len(a.models):
        ap.error("--labels needs one label per model")
    print(json.dumps(measure(a.models, labels, a.case, a.data, a.rounds, a.iters, a.warmup, a.threads)), flush=True)


if __name__ == "__main__":
    main()
