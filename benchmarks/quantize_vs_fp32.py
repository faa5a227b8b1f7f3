#!/usr/bin/env python3
"""DefaultQuantization's total wall time over a plain FP32 inference pass on the same calibration subset.

    python benchmarks/quantize_vs_fp32.py [--cases imagenet-lite0,minilm,fashion-cnn] [--data DIR]
                                          [--n 300] [--rounds 3] [--out FILE.json] [--doc docs/benchmarks.md]

For each case the calibration rows are loaded into memory once (np.load of calib.npz), then, interleaved
for ``--rounds`` rounds (order alternating):

* ``fp32_pass``: compile the FP32 model (CPU, INFERENCE_PRECISION_HINT f32, PERFORMANCE_HINT THROUGHPUT) and
  run an ``AsyncInferQueue`` loop with OPTIMAL_NUMBER_OF_INFER_REQUESTS requests over the n samples;
* ``quantize``: ``ovquant.api.quantize_with_report(model, samples, subset_size=n)`` with the default
  algorithm (DefaultQuantization, preset performance; minilm with model_type transformer), statistics
  cache off: every statistics pass, every algorithm and the int8 weight compression.

Both run in this one process after a warm-up of each (so neither pays Python's first imports); the
first quantize call of the process, with the plugin registry's start-up, is reported as well.
Prints ONE JSON line; ``--out`` writes it to a file and ``--doc`` puts a table into that markdown file
(section ``quantize_vs_fp32``, replaced on the next run).
"""
import argparse
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import publish  # noqa: E402
from bench_data import calib_rows, default_dir  # noqa: E402
from engine_overhead import interleaved, plain_loop  # noqa: E402

F32_TP = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}


def quantize_run(model, samples, n, kwargs):
    from ovquant.api import quantize_with_report

    t = time.perf_counter()
    _, report = quantize_with_report(model, samples, None, subset_size=n, **kwargs)
    secs = time.perf_counter() - t
    return {"seconds": secs, "pipeline_s": report.get("seconds", float("nan")),
            "statistics_s": sum(s.get("seconds", 0.0) for s in report.get("stages", [])),
            "n_stages": len(report.get("stages", []))}


def render(res):
    lines = [f"## Quantization time over a plain FP32 pass ({res['n_samples']} calibration samples)", "",
             f"Run {res['date']}, `benchmarks/quantize_vs_fp32.py`: samples preloaded; FP32 pass = compile + "
             "AsyncInferQueue loop (f32, THROUGHPUT hint) over the same samples; quantize = "
             "`quantize_with_report` with DefaultQuantization (statistics cache off); interleaved, "
             f"{res['rounds']} rounds after a warm-up, medians; {res['nproc']} cores. *first call* is the "
             "process's first quantize_with_report (plugin registry start-up included). Raw JSON: `"
             + res.get("json_path", "") + "`.", "",
             "| case | FP32 pass s | quantize s | of which statistics s | x FP32 pass | first call s (x FP32 pass) |",
             "|---|---|---|---|---|---|"]
    for case, r in res["cases"].items():
        m = r["median"]
        lines.append(f"| {case} | {m['fp32_pass']['seconds']:.2f} | {m['quantize']['seconds']:.2f} | "
                     f"{m['quantize']['statistics_s']:.2f} | {r['ratio']:.2f}x | "
                     f"{r['first_call_s']:.2f} ({r['first_call_ratio']:.2f}x) |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="imagenet-lite0,minilm,fashion-cnn")
    ap.add_argument("--data", default=default_dir())
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--doc", default=None)
    a = ap.parse_args()

    import openvino as ov

    core = ov.Core()
    res = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "n_samples": a.n, "rounds": a.rounds,
           "nproc": os.cpu_count(), "openvino": ov.__version__, "cases": {}}
    first = True
    for case in [c for c in a.cases.split(",") if c]:
        d = os.path.join(a.data, case)
        model = core.read_model(os.path.join(d, "model.xml"))
        samples = calib_rows(model.inputs, os.path.join(d, "calib.npz"), a.n)
        kwargs = {"model_type": "transformer"} if case == "minilm" else {}
        variants = {"fp32_pass": lambda: plain_loop(core, model, samples, F32_TP),
                    "quantize": lambda: quantize_run(model, samples, a.n, kwargs)}
        first_call = variants["quantize"]()   # warm-up (the process's first call when this is the first case)
        variants["fp32_pass"]()
        runs, med = interleaved(variants, a.rounds)
        base = med["fp32_pass"]["seconds"]
        res["cases"][case] = {"median": med, "ratio": round(med["quantize"]["seconds"] / base, 3),
                              "first_call_s": round(first_call["seconds"], 4), "first_call_in_process": first,
                              "first_call_ratio": round(first_call["seconds"] / base, 3),
                              "runs": {k: [{kk: round(vv, 4) if isinstance(vv, float) else vv for kk, vv in x.items()}
                                           for x in v] for k, v in runs.items()}}
        first = False
        print(f"{case}: quantize {med['quantize']['seconds']:.2f} s, FP32 pass {base:.2f} s, "
              f"{res['cases'][case]['ratio']:.2f}x", file=sys.stderr, flush=True)
    publish(res, a.out, a.doc, "quantize_vs_fp32", render)

if __name__ == "__main__":
    main()
