"""Task metrics of the zoo (numpy only): text recognition, detection, landmarks, segmentation, output error.

Every function takes plain numpy arrays; the zoo's cases (cases.py) call them on the outputs of the FP32
model and of each quantized model, row by row.
"""
import numpy as np


# ---------------------------------------------------------------- text recognition
def ctc_greedy_decode(logits: np.ndarray, charset) -> str:
    """Greedy CTC decode of one line: argmax per time step, repeated indices merged, index 0 (blank)
    dropped, as ddddocr decodes. ``logits`` is (T, C) or (T, 1, C) / (1, T, C)."""
    a = np.asarray(logits)
    if a.ndim == 3:
        a = a[:, 0, :] if a.shape[1] == 1 else a[0]
    idx = a.argmax(-1)
    out, prev = [], None
    for k in idx:
        k = int(k)
        if k != prev and k != 0 and k < len(charset):
            out.append(charset[k])
        prev = k
    return "".join(out)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(preds, truths) -> float:
    """Character error rate: sum of edit distances over sum of true lengths."""
    n = sum(len(t) for t in truths)
    return sum(edit_distance(p, t) for p, t in zip(preds, truths)) / max(n, 1)


def line_accuracy(preds, truths) -> float:
    """Fraction of lines read exactly."""
    return float(np.mean([p == t for p, t in zip(preds, truths)])) if len(truths) else float("nan")


# ---------------------------------------------------------------- boxes
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4); boxes are x1, y1, x2, y2."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: np.clip(z[:, 2] - z[:, 0], 0, None) * np.clip(z[:, 3] - z[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> list:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if order:
            ious = iou_matrix(boxes[i:i + 1], boxes[order])[0]
            order = [j for j, v in zip(order, ious) if v <= iou_thr]
    return keep


def match_boxes(ref: np.ndarray, pred: np.ndarray, iou_thr: float = 0.5) -> int:
    """Number of one-to-one matches between boxes ``ref`` and ``pred`` with IoU >= ``iou_thr``, pairs taken
    greedily by decreasing IoU."""
    if len(ref) == 0 or len(pred) == 0:
        return 0
    m = iou_matrix(ref, pred)
    pairs = sorted(((m[i, j], i, j) for i in range(m.shape[0]) for j in range(m.shape[1]) if m[i, j] >= iou_thr),
                   reverse=True)
    used_r, used_p, n = set(), set(), 0
    for _, i, j in pairs:
        if i not in used_r and j not in used_p:
            used_r.add(i)
            used_p.add(j)
            n += 1
    return n


def box_f1(ref_sets, pred_sets, iou_thr: float = 0.5) -> float:
    """Pooled F1 of predicted boxes against reference boxes over all images: 2 * matched / (n_ref + n_pred)
    (1.0 when both are empty everywhere)."""
    m = sum(match_boxes(r, p, iou_thr) for r, p in zip(ref_sets, pred_sets))
    n = sum(len(r) for r in ref_sets) + sum(len(p) for p in pred_sets)
    return 1.0 if n == 0 else 2.0 * m / n


def ssd_anchors(input_size: int, strides, two_per_layer: bool = True) -> np.ndarray:
    """Anchor centres (A, 2) in [0, 1] of MediaPipe's SSD anchor generator with fixed anchor size: layers of
    equal stride share a grid; each layer adds 2 anchors per cell (aspect 1 and the interpolated scale) when
    ``two_per_layer``, else 1; cells are row-major, anchors of a cell consecutive."""
    out, i = [], 0
    while i < len(strides):
        s, n = strides[i], 0
        while i < len(strides) and strides[i] == s:
            n += 2 if two_per_layer else 1
            i += 1
        g = int(np.ceil(input_size / s))
        for y in range(g):
            for x in range(g):
                out.extend([((x + 0.5) / g, (y + 0.5) / g)] * n)
    return np.asarray(out, np.float64)


def decode_ssd(regressors: np.ndarray, scores: np.ndarray, anchors: np.ndarray, input_size: int):
    """(boxes (A, 4) x1 y1 x2 y2 in [0, 1], scores (A,) sigmoid) of MediaPipe's SSD head: box centre offset
    and size in input pixels relative to the anchor centre."""
    r = np.asarray(regressors, np.float64).reshape(len(anchors), -1)
    cx = r[:, 0] / input_size + anchors[:, 0]
    cy = r[:, 1] / input_size + anchors[:, 1]
    w, h = r[:, 2] / input_size, r[:, 3] / input_size
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    s = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(scores, np.float64).reshape(-1), -100, 100)))
    return boxes, s


def detections(boxes: np.ndarray, scores: np.ndarray, score_thr: float, iou_thr: float) -> np.ndarray:
    """Boxes with score >= ``score_thr`` after NMS, and always the top-scoring box (so every image has one)."""
    sel = np.where(scores >= score_thr)[0]
    top = int(np.argmax(scores))
    if top not in sel:
        sel = np.append(sel, top)
    keep = nms(boxes[sel], scores[sel], iou_thr)
    return boxes[sel][keep]


# ---------------------------------------------------------------- landmarks, masks
def landmark_nme(ref: np.ndarray, pred: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """Per-row mean landmark distance normalized by the object's size. ``ref``/``pred`` (N, K, 2): the
    size is the diagonal of the reference landmarks' bounding box, at least ``min_size``."""
    ref = np.asarray(ref, np.float64)
    pred = np.asarray(pred, np.float64)
    d = np.linalg.norm(ref - pred, axis=-1).mean(-1)
    diag = np.linalg.norm(ref.max(1) - ref.min(1), axis=-1)
    return d / np.maximum(diag, max(min_size, 1e-9))


def mask_iou(ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row IoU of boolean masks (N, ...); 1.0 where both are empty."""
    ref = np.asarray(ref, bool).reshape(len(ref), -1)
    pred = np.asarray(pred, bool).reshape(len(pred), -1)
    inter = (ref & pred).sum(1)
    union = (ref | pred).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


# ---------------------------------------------------------------- output error
def output_error(ref: np.ndarray, pred: np.ndarray) -> dict:
    """Mean and worst per-row cosine similarity and relative L2 error ||pred - ref|| / ||ref|| of one output
    (rows flattened)."""
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    p = np.asarray(pred, np.float64).reshape(len(pred), -1)
    nr, npd = np.linalg.norm(r, axis=1), np.linalg.norm(p, axis=1)
    cos = np.where((nr > 0) & (npd > 0), (r * p).sum(1) / np.maximum(nr * npd, 1e-30), np.where(nr == npd, 1.0, 0.0))
    rel = np.linalg.norm(p - r, axis=1) / np.maximum(nr, 1e-30)
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "rel_l2_mean": float(rel.mean()),
            "rel_l2_max": float(rel.max())}
