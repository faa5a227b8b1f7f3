#!/usr/bin/env python3
"""Quantize time of ovquant's default against the default without ActivationGranularityChoice
(``auto_activations_granularity: "pertensor"``, the default before it), interleaved on the same host and
load, and one FP32 pass over the calibration subset (compiled once, sync inference, not counting compile).

    python benchmarks/zoo_time.py --case a,b [--repeats 2] [--out /tmp/zoo_time.json]

Each quantize runs in a process of its own (benchmarks/zoo/quantize_worker.py); the reported time is the
median over repeats of the quantize call alone. NNCF's time comes from benchmarks/results/zoo.json (its
run; give ``--nncf`` to rerun NNCF interleaved too).
"""
import argparse
import json
import os
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))

from benchmarks.zoo.cases import CASES  # noqa: E402
from benchmarks.zoo.common import zoo_dir  # noqa: E402
from benchmarks.zoo.run import quantize  # noqa: E402


def fp32_pass(xml, calib, n=300) -> float:
    import numpy as np
    import openvino as ov

    sys.path.insert(0, os.path.join(_HERE, "zoo"))
    from quantize_worker import calib_items

    core = ov.Core()
    m = core.read_model(xml)
    items = calib_items(m, calib)[:n]
    cm = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    t = time.perf_counter()
    for s in items:
        req.infer({k: np.asarray(v) for k, v in s.items()})
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nncf", action="store_true")
    ap.add_argument("--no-before", action="store_true", help="time only the default (and NNCF), not the pertensor run")
    ap.add_argument("--out", default="/tmp/zoo_time.json")
    a = ap.parse_args(argv)
    zoo = zoo_dir()
    stored = json.load(open(os.path.join(_HERE, "results", "zoo.json")))["cases"]
    res = {}
    for name in a.case.split(","):
        d = os.path.join(zoo, name)
        xml = os.path.join(d, "model.xml")
        runs = {"before": [], "after": [], "nncf": []}
        for _ in range(a.repeats):
            labels = (("before", '{"auto_activations_granularity": "pertensor"}'), ("after", ""))
            for label, ov_env in labels[1:] if a.no_before else labels:
                os.environ["OVQ_ZOO_OVERRIDES"] = ov_env
                r = quantize("ovquant", xml, d, f"/tmp/zoo_time/{name}/{label}.xml", "performance",
                             CASES[name].get("model_type"), None)
                runs[label].append(r["quantize_s"])
            os.environ.pop("OVQ_ZOO_OVERRIDES", None)
            if a.nncf:
                r = quantize("nncf", xml, d, f"/tmp/zoo_time/{name}/nncf.xml", "performance",
                             CASES[name].get("model_type"), os.path.join(zoo, "venv-nncf", "bin", "python"))
                runs["nncf"].append(r["quantize_s"])
        fp = fp32_pass(xml, os.path.join(d, "calib.npz"))
        med = {k: statistics.median(v) for k, v in runs.items() if v}
        nn = med.get("nncf", stored[name]["tools"]["nncf"]["quantize_s"])
        res[name] = {**{f"{k}_s": v for k, v in med.items()}, "fp32_pass_s": fp, "nncf_s": nn,
                     "after_x_nncf": med["after"] / nn, "after_x_fp32_pass": med["after"] / fp,
                     "nncf_interleaved": bool(a.nncf)}
        print(f"{name:15s} before {med.get('before', float('nan')):.2f}s after {med['after']:.2f}s nncf {nn:.2f}s "
              f"fp32 pass {fp:.2f}s  after/nncf {med['after'] / nn:.2f} after/fp32 {med['after'] / fp:.2f}", flush=True)
        json.dump(res, open(a.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
