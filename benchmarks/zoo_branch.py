#!/usr/bin/env python3
"""Score this checkout's ovquant default on zoo cases against the stored NNCF models and numbers.

    python benchmarks/zoo_branch.py [--case a,b] [--out /tmp/branch.json] [--boot 1000]

Per case: quantizes the FP32 IR with ovquant's default (performance preset, no options) in a process of its
own (benchmarks/zoo/quantize_worker.py), runs it, the FP32 IR and NNCF's INT8 model of the last zoo run
(``$OVQ_ZOO_DIR/runs/<case>/nncf.xml``) on the evaluation rows, and prints the case's metric for both with a
paired bootstrap of (ovquant - NNCF) over the evaluation rows: the 95% interval of the difference, resampling
rows (landmarks: per-row NME; detection: the pooled F1 of the resampled rows; labeled: per-row right/wrong, with
the exact McNemar p too). NNCF is not rerun: its quantize time and the last run's ovquant numbers come from
benchmarks/results/zoo.json.
"""
import argparse
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

import numpy as np  # noqa: E402

from benchmarks.zoo import cases as C  # noqa: E402
from benchmarks.zoo import metrics as M  # noqa: E402
from benchmarks.zoo.common import zoo_dir  # noqa: E402
from benchmarks.zoo.run import quantize  # noqa: E402
from paired import mcnemar_exact  # noqa: E402


def per_row(name, spec, d, ev, outs, ref):
    """(metric, per-row terms, how to pool them) for the paired bootstrap."""
    kind = spec["kind"]
    if kind == "landmarks":
        v = M.landmark_nme(C._points(spec, ref), C._points(spec, outs), 0.1 * spec["size"])
        return np.asarray(v, np.float64), "mean"
    if kind in ("yolox", "ssd"):
        rs, ps = C._det_sets(spec, ref), C._det_sets(spec, outs)
        return np.array([[M.match_boxes(r, p, 0.5), len(r) + len(p)] for r, p in zip(rs, ps)], np.float64), "f1"
    e = C.evaluate(name, spec, d, ev, outs, ref)
    if e["rows_right"] is not None:
        return np.asarray(e["rows_right"], np.float64), "mean"
    return None, None


def pool(x, how):
    if how == "f1":
        return 2 * x[..., 0].sum(-1) / np.maximum(x[..., 1].sum(-1), 1)
    return x.mean(-1)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default=None)
    ap.add_argument("--out", default="/tmp/zoo_branch.json")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--stored", default=os.path.join(_HERE, "results", "zoo.json"))
    a = ap.parse_args(argv)
    zoo = zoo_dir()
    stored = json.load(open(a.stored))["cases"]
    names = a.case.split(",") if a.case else list(stored)
    res = json.load(open(a.out)) if os.path.isfile(a.out) else {}
    for name in names:
        spec, d = C.CASES[name], os.path.join(zoo, name)
        out = os.path.join(os.path.splitext(a.out)[0] + "_models", name, "ovquant.xml")
        q = quantize("ovquant", os.path.join(d, "model.xml"), d, out, "performance", spec.get("model_type"), None)
        if "error" in q:
            print(name, "FAILED", q["error"])
            continue
        ev = C.load_eval(d)
        ref = C.run_model(os.path.join(d, "model.xml"), ev)
        mine = C.run_model(out, ev)
        nn = C.run_model(os.path.join(zoo, "runs", name, "nncf.xml"), ev)
        em, en = C.evaluate(name, spec, d, ev, mine, ref), C.evaluate(name, spec, d, ev, nn, ref)
        p = spec["primary"]
        st = stored[name]["tools"]
        r = {"metric": p, "higher_better": spec["higher_better"], "fp32": stored[name]["fp32"]["metrics"].get(p),
             "ovquant": em["metrics"][p], "nncf": en["metrics"][p], "ovquant_before": st["ovquant"]["metrics"][p],
             "nncf_stored": st["nncf"]["metrics"][p], "quantize_s": q["quantize_s"],
             "quantize_s_before": st["ovquant"]["quantize_s"], "nncf_quantize_s": st["nncf"]["quantize_s"],
             "n_fq": q["n_fq"], "outputs": em["outputs"]}
        xm, how = per_row(name, spec, d, ev, mine, ref)
        xn, _ = per_row(name, spec, d, ev, nn, ref)
        if xm is not None:
            rng = np.random.default_rng(0)
            idx = rng.integers(0, len(xm), (a.boot, len(xm)))
            diff = pool(xm[idx], how) - pool(xn[idx], how)
            r["diff_ci95"] = [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))]
            if em["rows_right"] is not None:
                rm, rn = np.array(em["rows_right"]), np.array(en["rows_right"])
                r["mcnemar_p"] = mcnemar_exact(int((rm & ~rn).sum()), int((rn & ~rm).sum()))
        sign = 1 if spec["higher_better"] else -1
        r["at_least_nncf"] = bool(sign * (r["ovquant"] - r["nncf"]) >= -1e-9)
        res[name] = r
        print(f"{name:15s} {p:12s} ovq {r['ovquant']:.4f} (before {r['ovquant_before']:.4f}) nncf {r['nncf']:.4f} "
              f"CI(ovq-nncf) {np.round(r.get('diff_ci95', [np.nan] * 2), 4)} q {r['quantize_s']:.1f}s "
              f"(before {r['quantize_s_before']:.1f}, nncf {r['nncf_quantize_s']:.1f}) fq {r['n_fq']}", flush=True)
        json.dump(res, open(a.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
