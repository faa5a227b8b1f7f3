#!/usr/bin/env python3
"""Sensitivity cost, max_output_error and quantize_with_accuracy_control on the model zoo (issue 15, items 3-5).

    python benchmarks/accuracy_control_zoo.py [--part control,sensitivity,output-error] [--cases a,b]
                                              [--max-drop 0.01] [--bound 0.05] [--out results.jsonl]
    python benchmarks/accuracy_control_zoo.py --table results.jsonl   (the control part's markdown table)

Needs the built zoo (``python -m benchmarks.zoo prepare``; cases in ~/.cache/ovquant-zoo/<case>/). Parts:

* ``control``: ``ovquant.quantize_with_accuracy_control(max_drop, drop_type="absolute")`` on every labeled
  case; ``validation_fn`` runs the case's eval.npz one row per inference (f32) and scores it with
  benchmarks/zoo's evaluate (the case's primary metric only). Reports final drop vs FP32, validation runs,
  quantizers reverted, time vs the plain quantization inside the same call, and the latency of FP32,
  full INT8 and the result (CPU, latency hint, interleaved rounds, median with min and max).
* ``sensitivity``: ``ovquant.analyze_sensitivity`` of the zoo's ovquant INT8 model (runs/<case>/ovquant.xml)
  on 32 calibration rows: seconds and cost in FP32 passes over the same rows.
* ``output-error``: ``quantize_with_report(max_output_error=bound)`` with 268 of the 300 calibration rows
  for statistics (32 held back for the control); the bound is then checked on 64 eval rows neither saw.

One JSON line per case and part, with the host's ISA; timing on a shared machine is noisy.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchmarks.zoo import cases as Z  # noqa: E402
from benchmarks.zoo.common import emit, zoo_dir  # noqa: E402

LABELED = ["ocr-common", "ocr-common-old", "imagenet-lite0", "fashion-cnn", "minilm"]


def isa() -> str:
    flags = set(open("/proc/cpuinfo").read().split())
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    best = "AMX" if "amx_int8" in flags else "AVX512-VNNI" if "avx512_vnni" in flags else \
        "AVX-VNNI" if "avx_vnni" in flags else "AVX2"
    return f"{best} (oneDNN capped at {cap})" if cap else best


def zoo() -> str:
    return zoo_dir()


def rows_of(model, path: str, skip: int = 0, n=None) -> list:
    data = np.load(path)
    feeds = {}
    for inp in model.inputs:
        key = next(f"input:{k}" for k in inp.get_names() if f"input:{k}" in data.files)
        feeds[inp.get_any_name()] = np.ascontiguousarray(data[key])
    total = len(next(iter(feeds.values())))
    stop = total if n is None else min(total, skip + n)
    return [{k: v[i] for k, v in feeds.items()} for i in range(skip, stop)]


def make_validation(case: str):
    """``validation_fn(compiled, data) -> primary metric`` over the case's eval rows, one row per
    inference, scored by benchmarks/zoo's evaluate on the primary metric alone (without the per-output
    error statistics, which the metric does not use: on ocr-common they took 11 s per run)."""
    spec, case_dir = Z.CASES[case], os.path.join(zoo(), case)
    ev = Z.load_eval(case_dir)

    def validation_fn(compiled, _data):
        req = compiled.create_infer_request()
        feeds = {inp.get_any_name(): ev[next(f"input:{n}" for n in inp.get_names() if f"input:{n}" in ev)]
                 for inp in compiled.inputs}
        n = len(next(iter(feeds.values())))
        outs = [[] for _ in compiled.outputs]
        for i in range(n):
            res = req.infer({k: v[i] for k, v in feeds.items()})
            for j, o in enumerate(compiled.outputs):
                outs[j].append(np.array(res[o]))
        outs = [np.stack(o) for o in outs]
        return float(Z.evaluate(case, spec, case_dir, ev, outs, outs, errors=False)["metrics"][spec["primary"]])

    return validation_fn, ev


def control(case: str, max_drop: float) -> dict:
    from ovquant.accuracy_control import quantize_with_accuracy_control_report
    from ovquant.io import read_model

    model = read_model(os.path.join(zoo(), case, "model.xml"))
    calib = rows_of(model, os.path.join(zoo(), case, "calib.npz"))
    fn, ev = make_validation(case)
    kw = {"model_type": Z.CASES[case]["model_type"]} if Z.CASES[case].get("model_type") else {}
    t0 = time.perf_counter()
    _, rep = quantize_with_accuracy_control_report(model, calib, ev, fn, max_drop=max_drop, drop_type="absolute", **kw)
    e = rep["accuracy_control"]
    out = {k: e.get(k) for k in ("metric_fp32", "metric_int8_full", "drop_int8_full", "metric", "drop", "n_reverted",
                                 "n_quantizers", "validation_runs", "validation_seconds", "quantize_seconds",
                                 "seconds", "time_vs_plain_quantization", "ranking_seconds", "ranking_samples_from",
                                 "probed")}
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    # the search's own cost: everything but the user's validation runs, over the plain quantization
    out["time_vs_plain_without_validation"] = round((e["seconds"] - e["validation_seconds"]) / e["quantize_seconds"], 2)
    out["within_1_point"] = e["drop"] <= 0.01 + 1e-12
    sp = e.get("speed")
    if sp:
        out.update(speedup_full_int8=sp["speedup_full_int8"], speedup_result=sp["speedup_result"],
                   kept_share_of_speedup=sp["kept_share_of_speedup"], latency=sp["latency"])
    else:
        out["kept_share_of_speedup"] = 1.0   # nothing reverted: the full INT8 model
    return out


def sensitivity(case: str) -> dict:
    import ovquant
    from ovquant.io import read_model

    fp32 = read_model(os.path.join(zoo(), case, "model.xml"))
    q = os.path.join(zoo(), "runs", case, "ovquant.xml")
    rows = rows_of(fp32, os.path.join(zoo(), case, "calib.npz"), n=32)
    r = ovquant.analyze_sensitivity(fp32, q, rows, n=32)
    keep = ("n_quantizers", "samples", "batch", "configurations", "inferences", "seconds", "setup_seconds",
            "fp32_pass_seconds", "cost_vs_fp32_pass", "configurations_cost_vs_fp32_pass", "error_all_quantized",
            "sum_of_errors")
    out = {k: r.get(k) for k in keep}
    out["top3"] = [(x["name"], round(x["share"], 3)) for x in r["quantizers"][:3]]
    return out


def output_error_part(case: str, bound: float) -> dict:
    import ovquant
    from ovquant.api import output_error
    from ovquant.io import read_model

    model = read_model(os.path.join(zoo(), case, "model.xml"))
    calib = rows_of(model, os.path.join(zoo(), case, "calib.npz"))
    kw = {"model_type": Z.CASES[case]["model_type"]} if Z.CASES[case].get("model_type") else {}
    t0 = time.perf_counter()
    q, rep = ovquant.quantize_with_report(model, calib, subset_size=268, max_output_error=bound, **kw)
    secs = time.perf_counter() - t0
    ctl = rep["output_error_control"]
    unseen = rows_of(model, os.path.join(zoo(), case, "eval.npz"), n=64)
    after = output_error(model, q, unseen, len(unseen))
    fn, ev = make_validation(case) if case in LABELED else (None, None)
    out = {"bound": bound, "samples_from": ctl["samples_from"], "n_reverted": ctl["n_reverted"],
           "n_quantizers": ctl["n_quantizers"], "evaluations": ctl["evaluations"],
           "rel_l2_before": ctl["relative_l2_before"], "rel_l2_after": ctl["relative_l2_after"],
           "rel_l2_eval64": [e.get("relative_l2") for e in after],
           "held_on_eval": all((e.get("relative_l2") or 0) <= bound for e in after),
           "speedup_full_int8": ctl["speed"]["speedup_full_int8"], "speedup_result": ctl["speed"]["speedup_result"],
           "kept_share_of_speedup": ctl["speed"]["kept_share_of_speedup"], "quantize_s": round(secs, 2),
           "control_s": ctl["seconds"]}
    if fn is not None:
        import openvino as ov
        out["metric"] = fn(ov.Core().compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), None)
    return out


def _pts(x: float) -> str:
    return f"{100 * x:.2f}"


def table(rows: list) -> str:
    """The markdown table of the ``control`` lines (metrics and drops in points; the last line of a case wins)."""
    last = {r["case"]: r for r in rows if r.get("part") == "control" and "metric_fp32" in r}
    out = ["| case | FP32 | full INT8 (drop) | result (drop) | within 1 pt | reverted | validation runs "
           "| time vs plain (without validation) | speed-up FP32->full INT8 / result | share kept |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for case, r in last.items():
        rev = f"{r['n_reverted']}/{r['n_quantizers'] if r.get('n_quantizers') is not None else '-'}"
        sp = (f"{r['speedup_full_int8']:.2f}x / {r['speedup_result']:.2f}x" if r.get("speedup_result")
              else "(nothing reverted)")
        out.append(f"| {case} | {_pts(r['metric_fp32'])} | {_pts(r['metric_int8_full'])} "
                   f"({-100 * r['drop_int8_full']:+.2f}) | {_pts(r['metric'])} ({-100 * r['drop']:+.2f}) | "
                   f"{'yes' if r['within_1_point'] else '**no**'} | {rev} | {r['validation_runs']} | "
                   f"{r['time_vs_plain_quantization']:.2f}x ({r['time_vs_plain_without_validation']:.2f}x) | {sp} | "
                   f"{r['kept_share_of_speedup']:.2f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default="control,sensitivity,output-error")
    ap.add_argument("--cases", default=None)
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--bound", type=float, default=0.05)
    ap.add_argument("--out", default=None, help="append the JSON lines to this file too")
    ap.add_argument("--table", default=None, help="print the control part's markdown table of a .jsonl from --out")
    a = ap.parse_args(argv)
    if a.table:
        with open(a.table) as f:
            print(table([json.loads(line) for line in f if line.strip()]))
        return 0
    parts = a.part.split(",")
    for part in parts:
        default = LABELED if part == "control" else ["fashion-cnn", "imagenet-lite0", "minilm", "ocr-common"]
        for case in (a.cases.split(",") if a.cases else default):
            if not os.path.exists(os.path.join(zoo(), case, "model.xml")):
                print(json.dumps({"case": case, "part": part, "skipped": "not built"}), flush=True)
                continue
            fn = {"control": lambda c: control(c, a.max_drop), "sensitivity": sensitivity,
                  "output-error": lambda c: output_error_part(c, a.bound)}[part]
            row = {"case": case, "part": part, "isa": isa(), **fn(case)}
            emit(json.dumps(row), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
