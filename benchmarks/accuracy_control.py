#!/usr/bin/env python3
"""Sensitivity pass cost and accuracy control on the benchmark cases (run with a python where ovquant is
installed; the benchmark set's evaluate.py supplies the metric).

    python benchmarks/accuracy_control.py [--data DIR] [--cases fashion-cnn,imagenet-lite0] [--max-drop 0.01]
                                          [--html OUT.html]

Per case, one JSON line: plain quantization time; the sensitivity pass (32 calibration rows) and its cost
as a multiple of one FP32 pass over the same rows; then ``quantize_with_accuracy_control`` with the case's
top-1 (validation = the case's eval.npz, run by evaluate.run_model's rules: one row per inference, f32) and,
for the classifiers, also with top-1 agreement with FP32 as the metric (a stricter target): final drop,
validation runs, quantizers reverted, time vs plain quantization, latency of FP32 / full INT8 / result.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import openvino as ov

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import calib_rows, default_dir, load_evaluate  # noqa: E402


def isa() -> str:
    flags = open("/proc/cpuinfo").read()
    return "AVX512-VNNI" if "avx512_vnni" in flags else ("AVX-VNNI" if "avx_vnni" in flags else "AVX2")


def make_metrics(ev, case: str, evaluate):
    keys = None

    def outputs(compiled):
        nonlocal keys
        keys = keys or {inp.get_any_name(): ev[next(f"input:{n}" for n in inp.get_names() if f"input:{n}" in ev)]
                        for inp in compiled.inputs}
        req = compiled.create_infer_request()
        n = len(next(iter(keys.values())))
        return np.stack([np.array(req.infer({k: v[i] for k, v in keys.items()})[compiled.outputs[0]]).reshape(-1)
                         for i in range(n)]).astype(np.float64)

    def top1(compiled, _data):
        return evaluate.case_metrics(case, ev, outputs(compiled))["top1"]

    ref = {}

    def agreement(compiled, _data):
        out = outputs(compiled).argmax(1)
        if "fp32" not in ref:      # the first call is accuracy control's FP32 run
            ref["fp32"] = out
        return float((out == ref["fp32"]).mean())

    return top1, agreement


def run_case(case: str, data: str, max_drop: float, html) -> dict:
    import ovquant
    from ovquant.accuracy_control import quantize_with_accuracy_control_report
    from ovquant.sensitivity import analyze_sensitivity

    evaluate = load_evaluate(data)
    m = ov.Core().read_model(os.path.join(data, case, "model.xml"))
    rows = calib_rows(m.inputs, os.path.join(data, case, "calib.npz"))
    t0 = time.perf_counter()
    q, rep = ovquant.quantize_with_report(m, rows)
    plain = time.perf_counter() - t0
    sens = analyze_sensitivity(m, q, rows, n=32)
    out = {"case": case, "isa": isa(), "plain_quantize_s": round(plain, 2),
           "sensitivity": {k: sens[k] for k in ("n_quantizers", "samples", "batch", "seconds", "setup_seconds",
                                                "fp32_pass_seconds", "cost_vs_fp32_pass",
                                                "configurations_cost_vs_fp32_pass", "error_all_quantized",
                                                "sum_of_errors")},
           "top_quantizers": [(r["name"], round(r["share"], 3)) for r in sens["quantizers"][:3]]}
    if html:
        from ovquant.html_report import write_html

        write_html(html, sens, case)
    if case == "minilm":
        return out
    _, ev = evaluate.load_eval(case, data)
    for label, fn in zip(("top1", "agreement"), make_metrics(ev, case, evaluate)):
        _, r = quantize_with_accuracy_control_report(m, rows, None, fn, max_drop=max_drop)
        ac = r["accuracy_control"]
        keep = ("metric_fp32", "metric_int8_full", "metric", "drop", "n_reverted", "n_quantizers", "validation_runs",
                "validation_seconds", "quantize_seconds", "seconds", "time_vs_plain_quantization", "speed")
        out[f"accuracy_control_{label}"] = {k: ac.get(k) for k in keep}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=default_dir())
    ap.add_argument("--cases", default="fashion-cnn,imagenet-lite0,minilm")
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--html", default=None, help="write the first case's sensitivity page here")
    a = ap.parse_args()
    for i, case in enumerate(a.cases.split(",")):
        print(json.dumps(run_case(case, a.data, a.max_drop, a.html if i == 0 else None)), flush=True)


if __name__ == "__main__":
    main()
