#!/usr/bin/env python3
"""How stable SlowInt8Check's first-timing verdict is under other timing schemes (docs/sensitivity.md,
"Could the timing be cheaper on small models?").

    python benchmarks/slow_int8_schemes.py --case fashion-cnn,face-lm [--repeats 12] [--work /tmp/si8]

Per zoo case: ovquant's default with ``skip_slow_int8: false`` (full INT8) is saved into ``--work``; FP32
and that model are compiled with SlowInt8Check's config; the *true* ratio comes from 40 interleaved rounds
of per-call medians (at least 4 s); then each scheme (budget, rounds, per-round statistic) is run
``--repeats`` times and its verdicts printed as a string: ``i`` INT8 pays, ``f`` FP32 pays, ``?`` neither
(the step's ``pays_off`` test). ``A`` is the step's own scheme (round means, the step's budget).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, os.path.join(_HERE, "zoo"))

from benchmarks.zoo.cases import CASES  # noqa: E402
from benchmarks.zoo.common import zoo_dir  # noqa: E402

SCHEMES = {"A": (1.0, 7, "mean"), "median": (1.0, 7, "median"), "median-half": (0.5, 7, "median"),
           "mean-half": (0.5, 7, "mean")}


def timing(reqs: dict, budget: float, rounds: int, stat: str) -> dict:
    one = {}
    for k, r in reqs.items():
        t0 = time.perf_counter()
        r.infer()
        one[k] = time.perf_counter() - t0
    n = max(1, int(budget / (rounds * sum(one.values()))))
    out = {k: [] for k in reqs}
    for _ in range(rounds):
        for k, r in reqs.items():
            ts = []
            for _ in range(n):
                t0 = time.perf_counter()
                r.infer()
                ts.append(time.perf_counter() - t0)
            out[k].append(float(np.mean(ts) if stat == "mean" else np.median(ts)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--work", default="/tmp/slow_int8_schemes")
    a = ap.parse_args(argv)
    import openvino as ov
    from quantize_worker import calib_items

    from ovquant.api import quantize_with_report
    from ovquant.io import read_model
    from ovquant.plugins.algorithms.slow_int8 import _CFG, budget_seconds, compare, pays_off

    os.makedirs(a.work, exist_ok=True)
    core = ov.Core()
    for case in a.case.split(","):
        d = os.path.join(zoo_dir(), case)
        fp32 = read_model(os.path.join(d, "model.xml"))
        items = calib_items(fp32, os.path.join(d, "calib.npz"))
        kw = {"model_type": CASES[case]["model_type"]} if CASES[case].get("model_type") else {}
        int8, _ = quantize_with_report(fp32, items, subset_size=300, preset="performance", skip_slow_int8=False, **kw)
        ov.save_model(int8, os.path.join(a.work, f"{case}.xml"))
        reqs = {}
        for k, m in (("fp32", fp32), ("int8", int8)):
            reqs[k] = core.compile_model(m, "CPU", _CFG).create_infer_request()
            reqs[k].infer(items[0])
        t0 = time.perf_counter()
        reqs["fp32"].infer()
        budget = budget_seconds(time.perf_counter() - t0, 300)

        def verdict(times):
            return "i" if pays_off(compare(times, "int8", "fp32")) else \
                "f" if pays_off(compare(times, "fp32", "int8")) else "?"

        truth = compare(timing(reqs, max(4.0, 20 * budget), 40, "median"), "int8", "fp32")
        row = {"case": case, "true_int8_over_fp32": truth["median"], "budget_s": round(budget, 3)}
        for name, (share, rounds, stat) in SCHEMES.items():
            row[name] = "".join(verdict(timing(reqs, budget * share, rounds, stat)) for _ in range(a.repeats))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
