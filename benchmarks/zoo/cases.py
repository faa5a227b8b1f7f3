"""The zoo's cases: where each model comes from, its licence, its inputs and the metric its users care about.

A case folder (``$OVQ_ZOO_DIR/<case>/``) holds ``model.xml|.bin`` (FP32 IR converted with
``openvino.convert_model``), the original file (``source.onnx`` / ``source.tflite``) when there is one,
``calib.npz`` and ``eval.npz`` (key ``input:<name>``: one batch-1 sample per row), ``meta.json`` and, for
the recognizers, ``charset.json``. :func:`evaluate` scores the outputs of any model of a case against the
outputs of the FP32 model on the same rows.
"""
import json
import os

import numpy as np

from . import metrics as M

MP = {"pip": "mediapipe==0.10.14", "licence": "Apache-2.0", "homepage": "https://github.com/google/mediapipe"}
DD = {"pip": "ddddocr==1.6.1", "licence": "MIT", "homepage": "https://github.com/sml2h3/ddddocr"}


def _mp(member, **kw):
    return {"source": {**MP, "member": "mediapipe/modules/" + member}, "format": "tflite", **kw}


def _dd(member, **kw):
    return {"source": {**DD, "member": "ddddocr/" + member}, "format": "onnx", **kw}


# kind: how inputs are made (prepare.py) and outputs scored (evaluate); primary: the metric the table compares
CASES = {
    "ocr-common": _dd("common.onnx", kind="ocr", family="text recognition", charset="CHARSET_BETA",
                      primary="line_acc", higher_better=True, labeled=True,
                      description="ddddocr 'beta' CTC text-line recognizer (grey 64 x W), 8210 classes"),
    "ocr-common-old": _dd("common_old.onnx", kind="ocr", family="text recognition", charset="CHARSET_OLD",
                          primary="line_acc", higher_better=True, labeled=True,
                          description="ddddocr default CTC text-line recognizer (grey 64 x W), 8210 classes"),
    "ocr-det": _dd("common_det.onnx", kind="yolox", family="detection", primary="box_f1", higher_better=True,
                   description="ddddocr character detector (YOLOX-style, 416 x 416 BGR 0..255)",
                   score_thr=0.1, nms_thr=0.45),
    "face-det-short": _mp("face_detection/face_detection_short_range.tflite", kind="ssd", family="detection",
                          primary="box_f1", higher_better=True, size=128, strides=[8, 16, 16, 16], two=True,
                          range=(-1.0, 1.0), score_thr=0.5, nms_thr=0.3,
                          description="BlazeFace short range face detector, 128 x 128 RGB"),
    "face-det-full": _mp("face_detection/face_detection_full_range_sparse.tflite", kind="ssd", family="detection",
                         primary="box_f1", higher_better=True, size=192, strides=[4], two=False,
                         range=(-1.0, 1.0), score_thr=0.5, nms_thr=0.3,
                         description="BlazeFace full range (sparse) face detector, 192 x 192 RGB"),
    "palm-det-lite": _mp("palm_detection/palm_detection_lite.tflite", kind="ssd", family="detection",
                         primary="box_f1", higher_better=True, size=192, strides=[8, 16, 16, 16], two=True,
                         range=(0.0, 1.0), score_thr=0.5, nms_thr=0.3,
                         description="palm detector (lite), 192 x 192 RGB"),
    "palm-det-full": _mp("palm_detection/palm_detection_full.tflite", kind="ssd", family="detection",
                         primary="box_f1", higher_better=True, size=192, strides=[8, 16, 16, 16], two=True,
                         range=(0.0, 1.0), score_thr=0.5, nms_thr=0.3,
                         description="palm detector (full), 192 x 192 RGB"),
    "pose-det": _mp("pose_detection/pose_detection.tflite", kind="ssd", family="detection", primary="box_f1",
                    higher_better=True, size=224, strides=[8, 16, 32, 32, 32], two=True, range=(-1.0, 1.0),
                    score_thr=0.5, nms_thr=0.3, description="BlazePose person detector, 224 x 224 RGB"),
    "hand-lm-lite": _mp("hand_landmark/hand_landmark_lite.tflite", kind="landmarks", family="landmarks",
                        primary="nme", higher_better=False, size=224, range=(0.0, 1.0), points=[(0, 21, 3)],
                        description="hand landmarks (lite), 21 points, 224 x 224 RGB"),
    "hand-lm-full": _mp("hand_landmark/hand_landmark_full.tflite", kind="landmarks", family="landmarks",
                        primary="nme", higher_better=False, size=224, range=(0.0, 1.0), points=[(0, 21, 3)],
                        description="hand landmarks (full), 21 points, 224 x 224 RGB"),
    "face-lm": _mp("face_landmark/face_landmark.tflite", kind="landmarks", family="landmarks", primary="nme",
                   higher_better=False, size=192, range=(0.0, 1.0), points=[(0, 468, 3)],
                   description="face mesh, 468 points, 192 x 192 RGB"),
    "iris-lm": _mp("iris_landmark/iris_landmark.tflite", kind="landmarks", family="landmarks", primary="nme",
                   higher_better=False, size=64, range=(0.0, 1.0), points=[(0, 71, 3), (1, 5, 3)],
                   description="eye contour + iris landmarks, 76 points, 64 x 64 RGB"),
    "pose-lm-seg": _mp("pose_landmark/pose_landmark_full.tflite", kind="landmarks", family="landmarks+segmentation",
                       primary="nme", higher_better=False, size=256, range=(0.0, 1.0), points=[(0, 39, 5)],
                       mask_output=2, description="BlazePose full: 39 landmarks + 256 x 256 person mask"),
    "hand-recrop": _mp("holistic_landmark/hand_recrop.tflite", kind="landmarks", family="landmarks",
                       primary="nme", higher_better=False, size=256, range=(0.0, 1.0), points=[(0, 2, 2)],
                       description="holistic hand re-crop regressor, 2 key points, 256 x 256 RGB"),
    # the three cases of the earlier benchmark set (build_cases.py): labeled classification and sentence embedding
    "imagenet-lite0": {"kind": "imagenet", "family": "classification", "primary": "top1", "higher_better": True,
                       "labeled": True, "legacy": True, "format": "ir",
                       "description": "EfficientNet-Lite0, ImageNet-1k"},
    "minilm": {"kind": "minilm", "family": "sentence embedding", "primary": "lee_spearman", "higher_better": True,
               "legacy": True, "format": "ir", "model_type": "transformer",
               "description": "all-MiniLM-L6-v2 sentence encoder"},
    "fashion-cnn": {"kind": "fashion", "family": "classification", "primary": "top1", "higher_better": True,
                    "labeled": True, "legacy": True, "format": "ir",
                    "description": "small CNN trained on Fashion-MNIST by prepare"},
}
NEW_CASES = [k for k, v in CASES.items() if not v.get("legacy")]
LEGACY_CASES = [k for k, v in CASES.items() if v.get("legacy")]


def run_model(xml, ev: dict) -> list:
    """Every output of model ``xml`` on every eval row, as one array (N, ...) per output (rows fed one by one,
    CPU with INFERENCE_PRECISION_HINT=f32). Outputs are in the model's order."""
    import openvino as ov

    core = ov.Core()
    cm = core.compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    feeds = {}
    for inp in cm.inputs:
        hit = [f"input:{n}" for n in inp.get_names() if f"input:{n}" in ev]
        if not hit:
            raise SystemExit(f"{xml}: no eval key for model input {inp.get_any_name()!r}")
        feeds[inp.get_any_name()] = ev[hit[0]]
    n = len(next(iter(feeds.values())))
    outs = [[] for _ in cm.outputs]
    for i in range(n):
        res = req.infer({k: v[i] for k, v in feeds.items()})
        for j, o in enumerate(cm.outputs):
            outs[j].append(np.array(res[o]))
    return [np.stack(o) for o in outs]


def load_eval(case_dir: str) -> dict:
    ev = np.load(os.path.join(case_dir, "eval.npz"))
    return {k: ev[k] for k in ev.files}


# ---------------------------------------------------------------- per kind
def _yolox_dets(out, size, score_thr, nms_thr):
    o = np.asarray(out, np.float64).reshape(-1, 6).copy()
    grids, strides = [], []
    for s in (8, 16, 32):
        g = size // s
        yv, xv = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        grids.append(np.stack([xv.ravel(), yv.ravel()], 1))
        strides.append(np.full((g * g, 1), s))
    grids, strides = np.concatenate(grids), np.concatenate(strides)
    xy = (o[:, :2] + grids) * strides
    wh = np.exp(np.clip(o[:, 2:4], -20, 20)) * strides
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1) / size
    scores = o[:, 4] * o[:, 5]
    return M.detections(boxes, scores, score_thr, nms_thr)


def _det_sets(spec, outs):
    n = len(outs[0])
    if spec["kind"] == "yolox":
        return [_yolox_dets(outs[0][i], 416, spec["score_thr"], spec["nms_thr"]) for i in range(n)]
    anchors = M.ssd_anchors(spec["size"], spec["strides"], spec["two"])
    res = []
    for i in range(n):
        b, s = M.decode_ssd(outs[0][i], outs[1][i], anchors, spec["size"])
        res.append(M.detections(b, s, spec["score_thr"], spec["nms_thr"]))
    return res


def _points(spec, outs):
    pts = []
    for idx, k, d in spec["points"]:
        pts.append(np.asarray(outs[idx], np.float64).reshape(len(outs[idx]), k, d)[:, :, :2])
    return np.concatenate(pts, 1)


def _legacy_metrics(kind, ev, out):
    """The task metrics of evaluate.py of the earlier benchmark set (first output only)."""
    out = np.asarray(out[0], np.float64).reshape(len(out[0]), -1)
    if kind == "imagenet":
        pred = out.argmax(1)
        ok = ev["label_ok"]
        lab = ok.any(1)
        top5 = np.argsort(-out, 1)[:, :5]
        m = {"top1": float(ok[lab, pred[lab]].mean()),
             "top5": float(np.mean([ok[i, top5[i]].any() for i in np.where(lab)[0]]))}
        return m, ok[np.arange(len(pred)), pred], lab
    if kind == "fashion":
        right = out.argmax(1) == ev["label"]
        return {"top1": float(right.mean())}, right, np.ones(len(right), bool)
    if kind == "minilm":
        e = out / np.linalg.norm(out, axis=1, keepdims=True)
        lee = e[ev["set"] == "lee"]
        iu = np.triu_indices(len(lee), 1)
        cos = (lee @ lee.T)[iu]
        human = ev["lee_human_sim"][iu]
        p = e[ev["set"] == "polarity"]
        y = ev["label"][ev["set"] == "polarity"]
        hits = []
        for i in range(len(p)):   # leave-one-out nearest-centroid probe
            keep = np.ones(len(p), bool)
            keep[i] = False
            c1, c0 = p[keep & (y == 1)].mean(0), p[keep & (y == 0)].mean(0)
            hits.append(int((p[i] @ c1 > p[i] @ c0) == y[i]))
        return ({"lee_spearman": _spearman(cos, human), "lee_pearson": _pearson(cos, human),
                 "polarity_centroid_acc": float(np.mean(hits))}, None, None)
    raise ValueError(kind)


def _pearson(a, b):
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _rank(a):
    a = np.asarray(a, np.float64)
    _, inv, cnt = np.unique(a, return_inverse=True, return_counts=True)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    r[order] = np.arange(1, len(a) + 1)
    sums = np.bincount(inv, weights=r)
    return (sums / cnt)[inv]


def _spearman(a, b):
    return _pearson(_rank(a), _rank(b))


def evaluate(name: str, spec: dict, case_dir: str, ev: dict, outs: list, ref: list, errors: bool = True) -> dict:
    """Metrics of one model's outputs ``outs`` against the FP32 outputs ``ref`` (both from run_model);
    ``errors=False`` leaves out the per-output cosine and relative L2 (``outputs`` is then empty).

    Returns {"metrics": {...}, "outputs": [per-output cosine / relative L2], "rows_right": bool list or
    None, "rows_labeled": bool list or None}. Agreement metrics (box_f1, nme, mask_iou, top1_agreement)
    compare with FP32, so FP32 scores 1 / 0 on them by construction."""
    kind = spec["kind"]
    m, right, labeled = {}, None, None
    if kind == "ocr":
        with open(os.path.join(case_dir, "charset.json"), encoding="utf-8") as f:
            charset = json.load(f)
        truth = [str(t) for t in ev["text"]]
        preds = [M.ctc_greedy_decode(o, charset) for o in outs[0]]
        m = {"line_acc": M.line_accuracy(preds, truth), "cer": M.cer(preds, truth)}
        right = np.array([p == t for p, t in zip(preds, truth)])
        labeled = np.ones(len(right), bool)
    elif kind in ("yolox", "ssd"):
        rs, ps = _det_sets(spec, ref), _det_sets(spec, outs)
        top_iou = [float(M.iou_matrix(r[:1], p[:1])[0, 0]) if len(r) and len(p) else 0.0 for r, p in zip(rs, ps)]
        m = {"box_f1": M.box_f1(rs, ps, 0.5), "top_box_iou": float(np.mean(top_iou)),
             "boxes_fp32": int(sum(len(r) for r in rs)), "boxes": int(sum(len(p) for p in ps))}
    elif kind == "landmarks":
        size = spec["size"]
        nme = M.landmark_nme(_points(spec, ref), _points(spec, outs), 0.1 * size)
        m = {"nme": float(nme.mean()), "nme_p95": float(np.percentile(nme, 95))}
        if spec.get("mask_output") is not None:
            k = spec["mask_output"]
            m["mask_iou"] = float(M.mask_iou(ref[k] > 0, outs[k] > 0).mean())
    else:
        m, right, labeled = _legacy_metrics(kind, ev, outs)
        if kind != "minilm":
            m["top1_agreement"] = float((np.asarray(outs[0]).reshape(len(outs[0]), -1).argmax(1) ==
                                         np.asarray(ref[0]).reshape(len(ref[0]), -1).argmax(1)).mean())
        else:
            m["cos_to_fp32_mean"] = M.output_error(ref[0], outs[0])["cos_mean"]
    errs = [M.output_error(r, o) for r, o in zip(ref, outs)] if errors else []
    return {"metrics": m, "outputs": errs,
            "rows_right": right.tolist() if right is not None else None,
            "rows_labeled": labeled.tolist() if labeled is not None else None}
