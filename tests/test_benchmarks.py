"""The benchmark harness's own statistics (benchmarks/paired.py), checked against hand-computed values."""
import importlib.util
import math
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "paired.py")
_spec = importlib.util.spec_from_file_location("ovquant_bench_paired", _PATH)
paired = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired)


@pytest.mark.parametrize("b,c,expected", [
    (0, 0, 1.0),
    (0, 1, 1.0),                                  # one discordant row: 2 * 1/2
    (0, 6, 2 / 64),                               # 2 * P[X = 0], X ~ Bin(6, 1/2)
    (8, 2, 2 * (1 + 10 + 45) / 1024),             # 2 * P[X <= 2], X ~ Bin(10, 1/2)
    (30, 30, 1.0),
])
def test_mcnemar_exact(b, c, expected):
    assert math.isclose(paired.mcnemar_exact(b, c), expected, rel_tol=1e-12)


def _onehot(pred, n_classes=4):
    out = np.zeros((len(pred), n_classes), np.float32)
    out[np.arange(len(pred)), pred] = 1.0
    return out


def test_compare_counts_rows_against_labels_and_fp32():
    # six rows: labels 0..3, the last row unlabeled (-1)
    label = np.array([0, 1, 2, 3, 0, -1])
    ev = {"label": label}
    fp32 = _onehot([0, 1, 0, 0, 0, 2])      # right on rows 0, 1, 4; wrong on 2, 3
    a = _onehot([0, 2, 2, 0, 0, 1])         # loses row 1, gains row 2, differs from FP32 on rows 1, 2, 5
    b = _onehot([0, 1, 0, 3, 0, 2])         # gains row 3
    res = paired.compare("fashion-cnn", ev, fp32, {"a": a, "b": b})
    assert res["n_labeled"] == 5 and res["fp32"]["correct"] == 3
    assert res["models"]["a"] == {"correct": 3, "lost": 1, "gained": 1, "disagree": 3}
    assert res["models"]["b"] == {"correct": 4, "lost": 0, "gained": 1, "disagree": 1}
    (pair,) = res["pairs"]
    # a right where b is wrong: row 2; b right where a is wrong: rows 1 and 3
    assert (pair["a_only"], pair["b_only"]) == (1, 2)
    assert pair["mcnemar_p"] == 1.0


def test_compare_names_rows_and_accepts_several_labels():
    ok = np.zeros((3, 4), bool)
    ok[0, [0, 1]] = True                   # row 0: two acceptable classes
    ok[1, 2] = True
    ev = {"label_ok": ok, "name": np.array(["x.png", "y.png", "z.png"])}   # row 2 unlabeled
    fp32 = _onehot([1, 3, 0])
    q = _onehot([0, 2, 1])
    res = paired.compare("imagenet-lite0", ev, fp32, {"q": q, "r": fp32})
    assert res["fp32"]["correct"] == 1
    m = res["models"]["q"]
    assert (m["correct"], m["lost"], m["gained"], m["gained_rows"], m["disagree"]) == (2, 0, 1, ["y.png"], 3)
    assert res["pairs"][0]["a_only_rows"] == ["y.png"] and res["pairs"][0]["b_only_rows"] == []
