"""Built-in aggregator ``hl_estimator``: the Hodges-Lehmann estimator of the per-sample values."""
import numpy as np

from ovquant import hookimpl
from ovquant.statistics import Aggregator


def _first_above(s: np.ndarray, t: float) -> np.ndarray:
    """For sorted ``s``: per ``i``, the smallest ``j > i`` with ``s[i] + s[j] > t`` (``len(s)`` if none).
    A vectorised binary search on the float sums themselves (``s[i] + s[j]`` grows with ``j``), so counts
    agree exactly with materialised sums."""
    n = len(s)
    lo, hi = np.arange(1, n + 1), np.full(n, n)
    while (active := lo < hi).any():
        mid = (lo + hi) // 2
        above = s + s[np.minimum(mid, n - 1)] > t
        hi = np.where(active & above, mid, hi)
        lo = np.where(active & ~above, mid + 1, lo)
    return lo


def _pair_sums(s: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """``s[i] + s[j]`` for every ``i`` and ``start[i] <= j < stop[i]``."""
    count = stop - start
    i = np.repeat(np.arange(len(s)), count)
    j = np.arange(count.sum()) + np.repeat(start - (np.cumsum(count) - count), count)
    return s[i] + s[j]


def pair_sum_ranks(s: np.ndarray, ranks: list[int], budget: int, window=None) -> list[float]:
    """The ``ranks``-th smallest (0-based, ascending list) of ``{s[i] + s[j] : i < j}`` for sorted ``s``,
    holding at most about ``budget`` sums in memory.

    The window of sums that holds the ranks is ``j`` in ``[start[i], stop[i])`` per ``i``, with ``below``
    sums before it. While it is too big, cut it at a value between its smallest and largest sum (each cut
    drops at least one sum; ranks on both sides of the cut are narrowed separately); then materialise it.
    """
    n = len(s)
    first = np.arange(1, n + 1)
    start, stop, below = window or (first, np.full(n, n), 0)
    while (stop - start).sum() > budget:
        rows = np.flatnonzero(start < stop)
        wmin, wmax = (s[rows] + s[start[rows]]).min(), (s[rows] + s[stop[rows] - 1]).max()
        if wmin == wmax:
            return [wmin] * len(ranks)
        mid = min(0.5 * wmin + 0.5 * wmax, np.nextafter(wmax, -np.inf))  # wmin <= mid < wmax
        cut = _first_above(s, mid)
        count = int((cut - first).sum())  # sums <= mid
        if count > ranks[-1]:
            stop = cut
        elif count <= ranks[0]:
            start, below = cut, count
        else:
            return (pair_sum_ranks(s, [r for r in ranks if r < count], budget, (start, cut, below))
                    + pair_sum_ranks(s, [r for r in ranks if r >= count], budget, (cut, stop, count)))
    window = np.partition(_pair_sums(s, start, stop), [r - below for r in ranks])
    return [window[r - below] for r in ranks]


class HLEstimatorAggregator(Aggregator):
    """Hodges-Lehmann: ``y = 0.5 * median{x_i + x_j : i > j}`` per element over the samples (strictly
    lower-triangular pairs, no self pairs; ``np.median`` convention for an even number of pairs), finite
    values only; an element with a single finite sample gives that sample, with none NaN.

    Keeps every sample; the pair sums are built one element (channel) at a time and, for large sample
    counts, only around the median (at most about ``pair_budget`` sums in memory).
    """

    name = "hl_estimator"
    #: most pair sums held in memory at once (per element)
    pair_budget = 1 << 18

    def aggregate(self, x):
        x = np.asarray(x, np.float64)
        flat = x.reshape(len(x), -1)
        out = np.full(flat.shape[1], np.nan)
        for c in range(flat.shape[1]):
            s = np.sort(flat[np.isfinite(flat[:, c]), c])
            if len(s) == 1:
                out[c] = s[0]
            elif len(s) > 1:
                m = len(s) * (len(s) - 1) // 2  # the median of m sums: mean of ranks (m-1)//2 and m//2
                lo, hi = pair_sum_ranks(s, [(m - 1) // 2, m // 2], self.pair_budget)
                out[c] = 0.25 * (lo + hi)
        return out.reshape(x.shape[1:]).astype(np.float32)


@hookimpl
def register_aggregators(register):
    register(HLEstimatorAggregator)
