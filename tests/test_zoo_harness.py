"""The model zoo's own logic (benchmarks/zoo): metrics against hand-computed values, the table writer, and one
tiny end-to-end case made in code (a real OpenVINO model, quantized by ovquant in a subprocess as run.py does).
No network and no built zoo are needed."""
import json
import math
import os
import sys

import numpy as np
import openvino as ov
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from benchmarks.zoo import metrics as M  # noqa: E402
from benchmarks.zoo import table  # noqa: E402
from benchmarks.zoo.cases import CASES, NEW_CASES, evaluate  # noqa: E402


# ---------------------------------------------------------------- text recognition
@pytest.mark.parametrize("a,b,d", [("", "", 0), ("abc", "abc", 0), ("abc", "abd", 1), ("kitten", "sitting", 3),
                                   ("", "abcd", 4), ("ab", "ba", 2), ("flaw", "lawn", 2)])
def test_edit_distance(a, b, d):
    assert M.edit_distance(a, b) == d == M.edit_distance(b, a)


def test_cer_and_line_accuracy():
    preds, truth = ["abcd", "abxd", "a"], ["abcd", "abcd", "abc"]
    assert math.isclose(M.cer(preds, truth), (0 + 1 + 2) / 11)
    assert math.isclose(M.line_accuracy(preds, truth), 1 / 3)


def test_ctc_decode_merges_repeats_and_drops_blank():
    charset = ["", "a", "b", "c"]
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3, 3]          # a a - a b b - - c c  ->  "aabc"
    logits = np.full((len(steps), 1, 4), -5.0)
    logits[np.arange(len(steps)), 0, steps] = 5.0
    assert M.ctc_greedy_decode(logits, charset) == "aabc"
    assert M.ctc_greedy_decode(logits[:, 0, :][None], charset) == "aabc"   # (1, T, C) layout


# ---------------------------------------------------------------- boxes
def test_iou_matrix_against_hand_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]])
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    m = M.iou_matrix(a, b)
    assert np.allclose(m, [[1 / 7, 1.0, 0.0], [0.0, 0.25, 0.0]])


def test_match_boxes_is_one_to_one_and_greedy_by_iou():
    ref = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    pred = np.array([[0, 0, 10, 9], [1, 0, 10, 10], [50, 50, 60, 60]])
    assert M.match_boxes(ref, pred, 0.5) == 1        # both preds overlap only the first ref box
    assert M.match_boxes(ref, pred[:0], 0.5) == 0
    # pooled F1 = 2 * matched / (n_ref + n_pred); both empty -> 1
    assert math.isclose(M.box_f1([ref, ref[:0]], [pred, pred[:0]]), 2 * 1 / 5)
    assert M.box_f1([ref[:0]], [ref[:0]]) == 1.0


def test_nms_keeps_highest_of_overlapping():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], float)
    assert M.nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5) == [1, 2]


@pytest.mark.parametrize("case,count", [("face-det-short", 896), ("face-det-full", 2304), ("palm-det-lite", 2016),
                                        ("pose-det", 2254)])
def test_ssd_anchor_counts_match_the_models_outputs(case, count):
    s = CASES[case]
    a = M.ssd_anchors(s["size"], s["strides"], s["two"])
    assert a.shape == (count, 2) and a.min() > 0 and a.max() < 1


def test_decode_ssd_and_detections():
    anchors = np.array([[0.25, 0.25], [0.75, 0.75]])
    reg = np.array([[0, 0, 64, 64], [12.8, 0, 12.8, 12.8]])   # input 128 px
    boxes, scores = M.decode_ssd(reg, np.array([3.0, -3.0]), anchors, 128)
    assert np.allclose(boxes[0], [0.0, 0.0, 0.5, 0.5])
    assert np.allclose(boxes[1], [0.8, 0.7, 0.9, 0.8])
    assert np.allclose(scores, 1 / (1 + np.exp([-3.0, 3.0])))
    d = M.detections(boxes, scores, 0.99, 0.3)                 # nothing over threshold: the top box is kept
    assert np.allclose(d, boxes[:1])


# ---------------------------------------------------------------- landmarks, masks, output error
def test_landmark_nme_normalizes_by_object_size():
    ref = np.array([[[0, 0], [3, 4]]], float)                  # bbox diagonal 5
    pred = ref + np.array([[[0, 1], [1, 0]]])                  # each point off by 1
    assert np.allclose(M.landmark_nme(ref, pred), [1 / 5])
    assert np.allclose(M.landmark_nme(ref, pred, min_size=10), [1 / 10])


def test_mask_iou():
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2] = True
    b[0, 1:3] = True                                            # 4 shared of 12
    assert np.allclose(M.mask_iou(a, b), [4 / 12, 1.0])


def test_output_error_against_numpy():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(5, 7))
    p = r + 0.1 * rng.normal(size=(5, 7))
    e = M.output_error(r, p)
    cos = (r * p).sum(1) / np.linalg.norm(r, axis=1) / np.linalg.norm(p, axis=1)
    rel = np.linalg.norm(p - r, axis=1) / np.linalg.norm(r, axis=1)
    assert math.isclose(e["cos_mean"], cos.mean()) and math.isclose(e["cos_min"], cos.min())
    assert math.isclose(e["rel_l2_mean"], rel.mean()) and math.isclose(e["rel_l2_max"], rel.max())


# ---------------------------------------------------------------- case definitions and the table
def test_every_new_case_names_source_licence_and_metric():
    assert len(NEW_CASES) >= 10
    assert len({CASES[n]["family"] for n in CASES}) >= 4
    for n in NEW_CASES:
        s = CASES[n]
        assert s["source"]["pip"].count("==") == 1 and s["source"]["member"] and s["source"]["licence"]
        assert s["format"] in ("onnx", "tflite") and s["primary"] and isinstance(s["higher_better"], bool)


def _case(primary, hb, fp, ovq, nncf):
    return {"family": "x", "primary": primary, "higher_better": hb, "fp32": {"metrics": {primary: fp}},
            "tools": {"ovquant": {"metrics": {primary: ovq}, "quantize_x_nncf": 0.5, "n_fq": 3},
                      "nncf": {"metrics": {primary: nncf}, "quantize_x_nncf": 1.0, "n_fq": 3}}}


def test_verdict_respects_metric_direction():
    assert table.verdict(_case("top1", True, 0.9, 0.85, 0.86)) == "worse"
    assert table.verdict(_case("top1", True, 0.9, 0.86, 0.86)) == "ok"
    assert table.verdict(_case("nme", False, 0.0, 0.02, 0.01)) == "worse"
    assert table.verdict(_case("nme", False, 0.0, 0.01, 0.02)) == "ok"
    c = _case("top1", True, 0.9, 0.8, 0.8)
    c["tools"]["nncf"] = {"error": "boom"}
    assert table.verdict(c) is None


def test_table_counts_worse_cases_and_replaces_its_section():
    res = {"host": {"isa": "AVX2"}, "cases": {"a": _case("top1", True, 0.9, 0.80, 0.88),
                                              "b": _case("nme", False, 0.0, 0.01, 0.02),
                                              "c": _case("line_acc", True, 0.9, 0.70, 0.75)}}
    md = table.render(res)
    assert "worse than NNCF's default on 2 of 3 cases" in md
    assert "worst: **a**" in md and "ISA **AVX2**" in md
    assert md.count("\n| a |") == 1 and "| ovquant | 80.00% | -10.00 pt | **no** |" in md
    doc = "# Benchmarks\n\nintro\n"
    once = table.replace_section(doc, md)
    twice = table.replace_section(once, "new body\n")
    assert once.startswith(doc.rstrip("\n")) and once.count(table.BEGIN) == 1
    assert twice.count(table.BEGIN) == 1 and "new body" in twice and "worst: **a**" not in twice
    assert twice.startswith("# Benchmarks\n\nintro\n")


# ---------------------------------------------------------------- tiny end-to-end case
def _tiny_model():
    import openvino.opset13 as op

    rng = np.random.default_rng(0)
    x = op.parameter([1, 3, 8, 8], np.float32, name="image")
    c = op.convolution(x, op.constant(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)), [1, 1], [1, 1],
                       [1, 1], [1, 1])
    r = op.relu(c)
    f = op.reshape(r, op.constant(np.array([1, 256], np.int64)), False)
    m = op.matmul(f, op.constant(rng.normal(0, 0.1, (256, 6)).astype(np.float32)), False, False)
    res = op.result(m)
    res.get_output_tensor(0).set_names({"points"})
    return ov.Model([res], [x], "tiny")


def test_tiny_case_end_to_end(tmp_path):
    from benchmarks.zoo import run

    zoo = tmp_path / "zoo"
    d = zoo / "tiny"
    d.mkdir(parents=True)
    ov.save_model(_tiny_model(), str(d / "model.xml"), compress_to_fp16=False)
    rng = np.random.default_rng(1)
    np.savez(d / "calib.npz", **{"input:image": rng.uniform(0, 1, (40, 1, 3, 8, 8)).astype(np.float32)})
    np.savez(d / "eval.npz", **{"input:image": rng.uniform(0, 1, (12, 1, 3, 8, 8)).astype(np.float32)})
    (d / "meta.json").write_text(json.dumps({"case": "tiny", "licence": "made in code"}))
    spec = {"kind": "landmarks", "family": "landmarks", "primary": "nme", "higher_better": False, "size": 8,
            "points": [(0, 3, 2)]}
    res = run.run_case("tiny", str(zoo), None, str(tmp_path / "runs"), rounds=2, spec=spec, tools=("ovquant",),
                       time_repeats=3)
    r = res["tools"]["ovquant"]
    assert "error" not in r, r
    assert len(r["quantize_s_runs"]) == 3 and r["quantize_s"] == float(np.median(r["quantize_s_runs"]))
    assert res["fp32"]["metrics"]["nme"] == 0.0
    assert 0.0 < r["metrics"]["nme"] < 0.2                     # INT8 moves the points, a little
    assert r["n_fq"] >= 2 and r["compute_ops"] == 2 and 0 <= r["int8_ops"] <= 2
    assert 0.9 < r["outputs"][0]["cos_mean"] <= 1.0
    assert set(res["latency_ms"]) == {"fp32", "ovquant"}
    md = table.render({"host": {}, "cases": {"tiny": {**res, "family": "landmarks"}}})
    assert "| tiny | landmarks | nme ↓ | 0.000% | ovquant |" in md
