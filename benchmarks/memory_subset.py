#!/usr/bin/env python3
"""Peak RSS of DefaultQuantization against stat_subset_size (imagenet-lite0 by default).

    python benchmarks/memory_subset.py [--case imagenet-lite0] [--sizes 300,3000] [--data DIR]

Each size runs in a fresh process (of the interpreter running this script; use the benchmark venv's).
The calibration data is a generator that cycles through the case's calib.npz rows, each sample a fresh
copy with a little noise, so that no more than one sample lives in the caller's memory: what grows with
the subset is ovquant's own. Prints ONE JSON line {case, runs: [{size, peak_rss_mb, quantize_s}], ratio}.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import calib_rows, default_dir  # noqa: E402


def child(case, data, size):
    import numpy as np
    import openvino as ov
    from ovquant.api import quantize_with_report

    d = os.path.join(data, case)
    model = ov.Core().read_model(os.path.join(d, "model.xml"))
    rows = calib_rows(model.inputs, os.path.join(d, "calib.npz"))
    rng = np.random.default_rng(0)

    def samples():
        for i in range(size):
            yield {k: (v + rng.normal(0, 0.01, v.shape).astype(v.dtype)) if v.dtype.kind == "f" else v
                   for k, v in rows[i % len(rows)].items()}

    t = time.perf_counter()
    quantize_with_report(model, samples(), None, subset_size=size)
    print(json.dumps({"size": size, "quantize_s": round(time.perf_counter() - t, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="imagenet-lite0")
    ap.add_argument("--sizes", default="300,3000")
    ap.add_argument("--data", default=default_dir())
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        return child(a.case, a.data, a.child)
    runs = []
    for size in [int(s) for s in a.sizes.split(",")]:
        p = subprocess.run([sys.executable, __file__, "--case", a.case, "--data", a.data, "--child", str(size)],
                           capture_output=True, text=True, check=True)
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(runs[-1], file=sys.stderr, flush=True)
    print(json.dumps({"case": a.case, "runs": runs,
                      "ratio_last_over_first": round(runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3)}))


if __name__ == "__main__":
    main()
