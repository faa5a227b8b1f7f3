"""Histograms of a quantizer's float data for the sensitivity report: ``HIST_BINS`` bins over the
quantizer's range widened by half its span on each side, with the counts beyond."""
import numpy as np

HIST_BINS = 48


def _edges(qz: dict) -> np.ndarray:
    lo, hi = qz.get("low"), qz.get("high")
    if lo is None or hi is None or not hi > lo:
        lo, hi = -1.0, 1.0
    span = hi - lo
    return np.linspace(lo - 0.5 * span, hi + 0.5 * span, HIST_BINS + 1)


def _hist(x: np.ndarray, qz: dict) -> tuple:
    """(counts over the quantizer's range widened by half its span each side, below, above, min, max)."""
    x = np.asarray(x, np.float64).ravel()
    x = x[np.isfinite(x)]
    e = _edges(qz)
    counts, _ = np.histogram(x, e)
    return (counts, int((x < e[0]).sum()), int((x > e[-1]).sum()),
            float(x.min()) if x.size else 0.0, float(x.max()) if x.size else 0.0)


def _merge(parts: list) -> dict:
    counts = sum(p[0] for p in parts)
    return {"counts": [int(c) for c in counts], "below": sum(p[1] for p in parts),
            "above": sum(p[2] for p in parts), "min": min(p[3] for p in parts), "max": max(p[4] for p in parts)}
