#!/usr/bin/env python3
"""What the statistics cache saves: DefaultQuantization, then a rerun that changes only the activations'
max aggregator (mean -> max), both with the same fresh cache folder.

    python benchmarks/cache_rerun.py [--cases imagenet-lite0,minilm,fashion-cnn] [--data DIR]

Calibration rows are preloaded (as run_ovquant.py does). Each case runs in this process after a warm-up
quantize call (imports and plugin start-up outside the timings). Prints ONE JSON line with both times,
their ratio and how many reductions the rerun took from the cache.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import calib_rows, default_dir  # noqa: E402


def config(aggregator, model_type=None):
    params = {"preset": "performance", "stat_subset_size": 300,
              "activations": {"range_estimator": {"max": {"aggregator": aggregator}}}}
    if model_type:
        params["model_type"] = model_type
    return {"compression": {"algorithms": [{"name": "DefaultQuantization", "params": params}]}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="imagenet-lite0,minilm,fashion-cnn")
    ap.add_argument("--data", default=default_dir())
    a = ap.parse_args()
    import openvino as ov
    from ovquant.api import quantize_with_report

    out = {"cases": {}}
    for case in [c for c in a.cases.split(",") if c]:
        d = os.path.join(a.data, case)
        model = ov.Core().read_model(os.path.join(d, "model.xml"))
        data = calib_rows(model.inputs, os.path.join(d, "calib.npz"))
        mt = "Transformer" if case == "minilm" else None
        quantize_with_report(model, data, config("mean", mt))   # warm-up, no cache
        tmp = tempfile.mkdtemp(prefix="ovquant-cache-")
        try:
            t = time.perf_counter()
            quantize_with_report(model, data, config("mean", mt), cache_dir=tmp)
            first = time.perf_counter() - t
            t = time.perf_counter()
            _, rep = quantize_with_report(model, data, config("max", mt), cache_dir=tmp)
            rerun = time.perf_counter() - t
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out["cases"][case] = {"first_s": round(first, 3), "rerun_s": round(rerun, 3),
                              "ratio": round(rerun / first, 3),
                              "rerun_cached_reductions": [s.get("n_cached") for s in rep["stages"]],
                              "rerun_in_graph_reductions": [s.get("n_in_graph") for s in rep["stages"]]}
        print(case, out["cases"][case], file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
