#!/usr/bin/env python3
"""Row-by-row comparison of two INT8 classifiers of a benchmark case, against labels and against FP32.

    python benchmarks/paired.py --case imagenet-lite0|fashion-cnn --models ovquant=A.xml,nncf=B.xml
                                [--data DIR] [--bench-dir DIR]

A difference of one or two images in top-1 on imagenet-lite0's 159 labeled rows says nothing by itself.
What it means shows on the rows: which rows each model gets right that the other gets wrong, and whether
they are rows FP32 gets right (a quantization loss) or wrong (a quantization error that happened to land
on the label). Runs every model and the case's FP32 model with the benchmark set's own ``evaluate.run_model``
on the eval rows and prints ONE JSON line:

* per model: ``correct`` (labeled rows right), ``lost`` (rows FP32 gets right and the model gets wrong),
  ``gained`` (rows FP32 gets wrong and the model gets right), ``disagree`` (rows whose top-1 differs from
  FP32's, labeled or not); for imagenet the row names of ``lost`` and ``gained``;
* per pair A, B: ``a_only`` (labeled rows A gets right and B wrong), ``b_only``, their names (imagenet) and
  the exact two-sided McNemar p-value ``p = min(1, 2 * P[X <= min(a_only, b_only)])`` with
  ``X ~ Binomial(a_only + b_only, 1/2)``: the chance of a split at least this uneven if both models were
  equally accurate.

Top-1 counts a row as right when the predicted class is among its acceptable labels (``label_ok``), as
evaluate.py does; fashion-cnn has one label per row.
"""
import argparse
import itertools
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import default_dir, load_evaluate  # noqa: E402


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value of ``b`` vs ``c`` discordant rows (1.0 when there are none)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def correctness(case: str, ev: dict, logits: np.ndarray) -> tuple:
    """(labeled-row mask, per-row correct flags) of a model's outputs."""
    pred = logits.argmax(1)
    if "label_ok" in ev:
        ok = ev["label_ok"]
        return ok.any(1), ok[np.arange(len(pred)), pred]
    lab = ev["label"]
    return lab >= 0, pred == lab


def compare(case: str, ev: dict, fp32: np.ndarray, outs: dict) -> dict:
    """The JSON of the module docstring from FP32's and each model's logits (``outs``: label -> logits)."""
    names = ev.get("name")
    rows = lambda mask: ([str(names[i]) for i in np.where(mask)[0]] if names is not None  # noqa: E731
                         else int(mask.sum()))
    labeled, fp_ok = correctness(case, ev, fp32)
    fp_top = fp32.argmax(1)
    res = {"case": case, "n_rows": int(len(fp32)), "n_labeled": int(labeled.sum()),
           "fp32": {"correct": int(fp_ok[labeled].sum())}, "models": {}, "pairs": []}
    right = {}
    for label, out in outs.items():
        _, ok = correctness(case, ev, out)
        right[label] = ok & labeled
        lost, gained = labeled & fp_ok & ~ok, labeled & ~fp_ok & ok
        res["models"][label] = {"correct": int(right[label].sum()), "lost": int(lost.sum()),
                                "gained": int(gained.sum()),
                                "disagree": int((out.argmax(1) != fp_top).sum())}
        if names is not None:
            res["models"][label].update(lost_rows=rows(lost), gained_rows=rows(gained))
    for a, b in itertools.combinations(outs, 2):
        a_only, b_only = right[a] & ~right[b], right[b] & ~right[a]
        pair = {"a": a, "b": b, "a_only": int(a_only.sum()), "b_only": int(b_only.sum()),
                "mcnemar_p": round(mcnemar_exact(int(a_only.sum()), int(b_only.sum())), 4)}
        if names is not None:
            pair.update(a_only_rows=rows(a_only), b_only_rows=rows(b_only))
        res["pairs"].append(pair)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", required=True, choices=["imagenet-lite0", "fashion-cnn"])
    ap.add_argument("--models", required=True, help="label=path.xml,label=path.xml,...")
    ap.add_argument("--data", default=default_dir())
    ap.add_argument("--bench-dir", default=None, help="folder of the benchmark set's evaluate.py")
    a = ap.parse_args()
    evaluate = load_evaluate(a.data, a.bench_dir)
    models = dict(item.split("=", 1) for item in a.models.split(","))
    case_dir, ev = evaluate.load_eval(a.case, a.data)
    fp32 = evaluate.run_model(os.path.join(case_dir, "model.xml"), ev)
    outs = {label: evaluate.run_model(xml, ev) for label, xml in models.items()}
    print(json.dumps(compare(a.case, ev, fp32, outs)), flush=True)


if __name__ == "__main__":
    main()
