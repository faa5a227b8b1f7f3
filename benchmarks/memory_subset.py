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


def child(case, data, size):
    import numpy as np
    import openvino as ov
    from ovquant.api import quantize_with_report

    d = os.path.join(data, case)
    model = ov.Core().read_model(os.path.join(d, "model.xml"))
    cal = np.load(os.path.join(d, "calib.npz"))
    feeds = {}
    for inp in model.inputs:
        key = next(f"input:{n}" for n in inp.get_names() if f"input:{n}" in cal.files)
        feeds[inp.get_any_name()] = cal[key]
    n = len(next(iter(feeds.values())))
    rng = np.random.default_rng(0)

    def samples():
        for i in range(size):
            yield {k: (v[i % n] + rng.normal(0, 0.01, v[i % n].shape).astype(v.dtype)) if v.dtype.kind == "f"
                   else v[i % n] for k, v in feeds.items()}

    t = time.perf_counter()
    quantize_with_report(model, samples(), None, subset_size=size)
    print(json.dumps({"size": size, "quantize_s": round(time.perf_counter() - t, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="imagenet-lite0")
    ap.add_argument("--sizes", default="300,3000")
    ap.add_argument("--data", default=os.environ.get("OVQ_BENCH_DIR") or os.path.expanduser("~/.cache/ovquant-bench"))
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
