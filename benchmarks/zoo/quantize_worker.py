#!/usr/bin/env python3
"""Quantize one zoo model in a process of its own and print ONE JSON line (run by run.py).

    python quantize_worker.py --tool ovquant|nncf --model M.(xml|onnx|tflite) --calib calib.npz --out Q.xml
                              [--preset performance|mixed] [--model-type transformer] [--subset-size 300]

``ovquant``: ``ovquant.io.read_model`` (what the CLI reads: IR or the original file) and
``ovquant.api.quantize_with_report`` with only the preset (and model_type) given. ``nncf``: run with the NNCF
venv's python; ``nncf.quantize`` with its defaults (preset performance, subset_size 300, fast bias
correction). The calibration rows are in memory before the clock starts, for both tools alike;
``quantize_s`` times the quantize call only; ``peak_rss_mb`` is this process's peak RSS.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np


def calib_items(model, path):
    cal = np.load(path)
    feeds = {}
    for inp in model.inputs:
        key = next(f"input:{k}" for k in inp.get_names() if f"input:{k}" in cal.files)
        feeds[inp.get_any_name()] = np.ascontiguousarray(cal[key])
    n = len(next(iter(feeds.values())))
    return [{k: v[i] for k, v in feeds.items()} for i in range(n)]


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (reset by exec; ru_maxrss keeps the forking parent's peak across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True, choices=["ovquant", "nncf"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="performance")
    ap.add_argument("--model-type", default=None)
    ap.add_argument("--subset-size", type=int, default=300)
    a = ap.parse_args()
    os.environ.setdefault("NNCF_CI", "1")   # NNCF telemetry off
    import openvino as ov

    core = ov.Core()
    res = {"tool": a.tool, "model": a.model, "preset": a.preset}
    if a.tool == "ovquant":
        import ovquant
        from ovquant.api import quantize_with_report
        from ovquant.io import read_model

        model = read_model(a.model)
        items = calib_items(model, a.calib)
        kw = {"preset": a.preset}
        if a.model_type:
            kw["model_type"] = a.model_type
        if os.environ.get("OVQ_ZOO_OVERRIDES"):   # extra ovquant keywords (JSON), for experiments
            kw.update(json.loads(os.environ["OVQ_ZOO_OVERRIDES"]))
        t = time.perf_counter()
        q, report = quantize_with_report(model, items, subset_size=a.subset_size, **kw)
        res["quantize_s"] = time.perf_counter() - t
        res["version"] = getattr(ovquant, "__version__", None)
        res["pipeline"] = report.get("pipeline")
        slow = next((e for e in report.get("algorithms", []) if e.get("name") == "SlowInt8Check"), None)
        if slow:   # what the host's timing kept in float (the model's speed and so its metric depend on it)
            res["slow_int8"] = {k: slow.get(k) for k in ("summary", "n_kept_in_float", "kept_in_float", "check_seconds", "int8_over_fp32",
                                                "int8_over_fp32_first", "float_over_int8")}
    else:
        import nncf

        model = core.read_model(a.model)
        items = calib_items(model, a.calib)
        kw = {}
        if a.preset != "performance":
            kw["preset"] = nncf.QuantizationPreset(a.preset)
        if a.model_type == "transformer":
            kw["model_type"] = nncf.ModelType.TRANSFORMER
        t = time.perf_counter()
        q = nncf.quantize(model, nncf.Dataset(items), subset_size=a.subset_size, **kw)
        res["quantize_s"] = time.perf_counter() - t
        res["version"] = nncf.__version__
    res["peak_rss_mb"] = _peak_rss_mb()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    ov.save_model(q, a.out)
    ops = core.read_model(a.out).get_ordered_ops()
    res["n_fq"] = sum(o.get_type_name() == "FakeQuantize" for o in ops)
    res["n_int8_weights"] = sum(o.get_type_name() == "Constant" and o.get_element_type() in (ov.Type.i8, ov.Type.u8)
                                for o in ops)
    res["n_calib"] = min(len(items), a.subset_size)
    res["openvino"] = ov.__version__
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main())
