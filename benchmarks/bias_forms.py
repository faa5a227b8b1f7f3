#!/usr/bin/env python3
"""FastBiasCorrection's forms on every benchmark case: error vs FP32, task metric and time.

    python benchmarks/bias_forms.py [--cases imagenet-lite0,minilm,fashion-cnn] [--data DIR] [--preset performance]
                                    [--forms fast,exact,mean_blob,none] [--out FILE.json] [--doc docs/benchmarks.md]

For each case, in this one process (calibration rows preloaded, statistics cache off), DefaultQuantization
runs once per ``bias_correction_form`` (``none``: the pipeline without FastBiasCorrection, i.e.
ActivationChannelAlignment and MinMaxQuantization, plus SmoothQuant for minilm), and every INT8 model is
scored on the case's eval rows with the benchmark set's own ``evaluate.run_model`` and ``case_metrics``:

* ``rel_l2``: ``||y_q - y||_F / ||y||_F`` over all eval rows' outputs (logits; minilm: embeddings);
* classifiers: ``agreement`` (top-1 equal to FP32's), ``lost`` (labeled rows FP32 gets right and the model
  wrong) and ``gained`` (the reverse), and the task metric ``top1``;
* minilm: mean and min cosine to FP32's embedding, and ``lee_spearman``;
* ``quantize_s``: the quantize_with_report call.

Prints ONE JSON line; ``--out`` writes it to a file and ``--doc`` puts a table into that markdown file
(section ``bias_forms``).
"""
import argparse
import datetime
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import publish  # noqa: E402
from bench_data import calib_rows, default_dir, load_evaluate  # noqa: E402
from paired import compare  # noqa: E402

CASES = ("imagenet-lite0", "minilm", "fashion-cnn")


def score(evaluate, case, ev, y, fp):
    m = evaluate.case_metrics(case, ev, y)
    res = {"rel_l2": float(np.linalg.norm(y - fp) / np.linalg.norm(fp))}
    if case == "minilm":
        a = y / np.linalg.norm(y, axis=1, keepdims=True)
        b = fp / np.linalg.norm(fp, axis=1, keepdims=True)
        c = (a * b).sum(1)
        res.update(cos_mean=float(c.mean()), cos_min=float(c.min()), lee_spearman=m["lee_spearman"])
        return res
    (m_rows,) = compare(case, ev, fp, {"q": y})["models"].values()
    res.update(agreement=1.0 - m_rows["disagree"] / len(y), top1=m["top1"], lost=m_rows["lost"],
               gained=m_rows["gained"])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--data", default=default_dir())
    ap.add_argument("--bench-dir", default=None, help="folder of the benchmark set's evaluate.py")
    ap.add_argument("--preset", default="performance", choices=["performance", "mixed"])
    ap.add_argument("--forms", default="fast,exact,mean_blob,none")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--out", default=None)
    ap.add_argument("--doc", default=None)
    a = ap.parse_args()
    evaluate = load_evaluate(a.data, a.bench_dir)
    import openvino as ov

    from ovquant.api import quantize_with_report
    from ovquant.plugins.algorithms.params import QuantizationParams
    from ovquant.pipeline import expand

    core = ov.Core()
    res = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "preset": a.preset, "n_samples": a.n,
           "nproc": os.cpu_count(), "cases": {}}
    for case in a.cases.split(","):
        case_dir, ev = evaluate.load_eval(case, a.data)
        xml = os.path.join(case_dir, "model.xml")
        model = core.read_model(xml)
        samples = calib_rows(model.inputs, os.path.join(case_dir, "calib.npz"), a.n)
        fp = evaluate.run_model(xml, ev)
        kwargs = {"preset": a.preset}
        if case == "minilm":
            kwargs["model_type"] = "transformer"
        rows = {}
        for form in a.forms.split(","):
            extra = {"bias_correction_form": form}
            if form == "none":
                steps = [s.name for s in expand("DefaultQuantization", QuantizationParams(**kwargs))]
                extra = {"pipeline": [s for s in steps if s != "FastBiasCorrection"]}
            print(f"{case}: {form} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            q, _ = quantize_with_report(model, samples, None, subset_size=a.n, **kwargs, **extra)
            secs = time.perf_counter() - t
            path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ovquant-bias-forms-{case}.xml")
            ov.save_model(q, path)
            rows[form] = {"quantize_s": round(secs, 3), **score(evaluate, case, ev, evaluate.run_model(path, ev), fp)}
        res["cases"][case] = rows
    publish(res, a.out, a.doc, "bias_forms", render)


def render(res):
    lines = [f"## FastBiasCorrection forms (preset {res['preset']}, {res['n_samples']} calibration samples)", "",
             f"Run {res['date']}, `benchmarks/bias_forms.py`: DefaultQuantization with each "
             "`bias_correction_form` (`none`: without FastBiasCorrection), one process, statistics cache off. "
             "*rel-L2*: error of the outputs (logits; minilm: embeddings) vs FP32 on all eval rows; *lost* / "
             "*gained*: labeled rows FP32 gets right and the model wrong, and the reverse. Raw JSON: `"
             + res.get("json_path", "") + "`.", "",
             "| case | form | rel-L2 | agreement (minilm: cosine mean / min) | task metric | lost / gained | quantize s |",
             "|---|---|---|---|---|---|---|"]
    for case, rows in res["cases"].items():
        for form, r in rows.items():
            if case == "minilm":
                agree, metric, lg = f"{r['cos_mean']:.5f} / {r['cos_min']:.4f}", f"Spearman {r['lee_spearman']:.4f}", ""
            else:
                agree, metric = f"{100 * r['agreement']:.2f}%", f"top-1 {100 * r['top1']:.2f}%"
                lg = f"{r['lost']} / {r['gained']}"
            lines.append(f"| {case} | `{form}` | {r['rel_l2']:.4f} | {agree} | {metric} | {lg} | {r['quantize_s']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
