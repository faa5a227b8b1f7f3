#!/usr/bin/env python3
"""ovquant INT8 post-training quantization of a benchmark case: the ovquant twin of the benchmark set's
``nncf_reference.py`` (run it with the benchmark venv's python, where ovquant is installed).

    python benchmarks/run_ovquant.py --case CASE --out Q.xml [--data DIR] [--preset performance|mixed]
                                     [--model-type auto|none|transformer] [--subset-size 300]
                                     [--pipeline A,B,...] [--config FILE] [--data-mode preload|path]
                                     [--layerwise-tuning]

Quantizes DIR/<case>/model.xml with ``ovquant.api.quantize_with_report`` on DIR/<case>/calib.npz, saves
Q.xml/Q.bin and prints ONE JSON line {case, quantize_s, peak_rss_mb, rss_before_quantize_mb, n_fq,
n_int8_weight_consts, stages, pipeline, ...}.

Timing mirrors nncf_reference.py: ``quantize_s`` is the quantize_with_report call only (model reading and
saving are outside; with the default ``--data-mode preload`` the calibration rows are loaded into memory
before the clock starts, exactly as nncf_reference.py builds its ``nncf.Dataset`` items; ``--data-mode path``
passes the .npz path and so times its decompression too). ``pipeline_s`` is the pipeline's own time
(statistics passes + algorithms); ``quantize_s - pipeline_s`` is what quantize_with_report adds around it
(weight compression; with ``--error-samples N`` also its INT8-vs-FP32 output check on N samples, off by
default as in the API). ``total_s`` is the whole process from
interpreter start. ``--model-type auto`` means transformer for minilm, none otherwise.
"""
import os
import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import calib_rows, default_dir  # noqa: E402


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _process_start_s():
    """Seconds since this process started (from /proc, so interpreter start-up counts too)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except Exception:
        return time.perf_counter() - _T_START



def _compact_stage(s):
    return {k: v for k, v in s.items() if not isinstance(v, (list, dict)) or k == "algorithms"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", required=True)
    ap.add_argument("--out", required=True, help="output IR path (.xml)")
    ap.add_argument("--data", default=default_dir())
    ap.add_argument("--preset", choices=["performance", "mixed"], default=None,
                    help="default: performance, or the config's preset when --config is given")
    ap.add_argument("--model-type", choices=["auto", "none", "transformer"], default="auto")
    ap.add_argument("--subset-size", type=int, default=300)
    ap.add_argument("--pipeline", default=None, help="comma-separated algorithm names (default: the config's or "
                                                     "the registered default algorithm)")
    ap.add_argument("--config", default=None, help="ovquant/POT config file (algorithms and params)")
    ap.add_argument("--data-mode", choices=["preload", "path"], default="preload",
                    help="preload (default): rows in memory before timing, like nncf_reference.py; "
                         "path: pass the calib.npz path to ovquant")
    ap.add_argument("--no-fp16", action="store_true", help="save with compress_to_fp16=False")
    ap.add_argument("--layerwise-tuning", action="store_true", help="use_layerwise_tuning: true")
    ap.add_argument("--error-samples", type=int, default=0,
                    help="ask quantize_with_report for its INT8-vs-FP32 output error on N samples (timed)")
    a = ap.parse_args()
    mtype = a.model_type if a.model_type != "auto" else ("transformer" if a.case == "minilm" else "none")

    t0 = time.perf_counter()
    import openvino as ov
    import ovquant
    from ovquant.api import quantize_with_report
    import_s = time.perf_counter() - t0

    d = os.path.join(a.data, a.case)
    core = ov.Core()
    model = core.read_model(os.path.join(d, "model.xml"))
    calib_path = os.path.join(d, "calib.npz")
    data = calib_rows(model.inputs, calib_path) if a.data_mode == "preload" else calib_path
    n_rows = len(data) if a.data_mode == "preload" else None
    pipeline = [p.strip() for p in a.pipeline.split(",") if p.strip()] if a.pipeline else None
    preset = a.preset or (None if a.config else "performance")
    kwargs = {"preset": preset} if preset else {}
    if a.error_samples:
        kwargs["error_samples"] = a.error_samples
    if a.layerwise_tuning:
        kwargs["use_layerwise_tuning"] = True
    if mtype == "transformer":
        kwargs["model_type"] = "transformer"
    rss_before = rss_mb()

    t = time.perf_counter()
    q, report = quantize_with_report(model, data, a.config, pipeline=pipeline, subset_size=a.subset_size, **kwargs)
    quantize_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # kB on Linux
    rss_after = rss_mb()

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    # saved like nncf_reference.py saves NNCF's model (ov.save_model's default: remaining float constants
    # in f16), so that .bin sizes compare like for like; --no-fp16 keeps them f32
    ov.save_model(q, a.out, compress_to_fp16=not a.no_fp16)
    saved = core.read_model(a.out)
    ops = saved.get_ordered_ops()
    n_fq = sum(o.get_type_name() == "FakeQuantize" for o in ops)
    n_w8 = sum(o.get_type_name() == "Constant" and o.get_element_type() in (ov.Type.i8, ov.Type.u8) for o in ops)
    algos = [{k: v for k, v in al.items() if k in ("name", "seconds", "n_fake_quantize")}
             for al in report.get("algorithms", [])]
    pipeline_s = report.get("seconds")
    res = {"case": a.case, "tool": "ovquant", "out": os.path.abspath(a.out), "quantize_s": round(quantize_s, 2),
           "pipeline_s": round(pipeline_s, 3) if pipeline_s is not None else None,
           "around_pipeline_s": round(quantize_s - pipeline_s, 3) if pipeline_s is not None else None,
           "import_s": round(import_s, 2), "total_s": round(_process_start_s(), 2),
           "peak_rss_mb": round(peak, 1), "rss_before_quantize_mb": round(rss_before, 1),
           "rss_after_quantize_mb": round(rss_after, 1), "n_fq": n_fq, "n_int8_weight_consts": n_w8,
           "n_calib": min(n_rows, a.subset_size) if n_rows is not None else a.subset_size,
           "stages": [_compact_stage(s) for s in report.get("stages", [])], "algorithms": algos,
           "pipeline": report.get("pipeline"), "target_device": report.get("target_device"),
           "output_error": report.get("output_error"), "preset": preset or "(config)", "model_type": mtype,
           "config": a.config, "data_mode": a.data_mode, "compress_to_fp16": not a.no_fp16,
           "ovquant": getattr(ovquant, "__version__", None), "openvino": ov.__version__}
    res["total_s"] = round(_process_start_s(), 2)
    print(json.dumps(res, default=str), flush=True)


if __name__ == "__main__":
    main()
