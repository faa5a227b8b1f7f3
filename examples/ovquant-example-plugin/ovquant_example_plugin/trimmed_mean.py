"""Aggregator ``trimmed_mean``: the mean of the per-sample values after dropping the extremes."""
import numpy as np

from ovquant.statistics import Aggregator

from . import usage


class TrimmedMeanAggregator(Aggregator):
    """``y = mean(sorted(x)[k : n - k])`` per element over the ``n`` samples with a finite value, with
    ``k = floor(trim * n)`` values dropped at each end (``scipy.stats.trim_mean``); NaN where no sample
    is finite. ``trim`` is in ``[0, 0.5)``: 0 is the plain mean, values near 0.5 approach the median.

    Keeps every sample (the order statistics need them all).

    ovquant's config has no key for aggregator parameters (``range_estimator.max`` takes ``type``,
    ``aggregator``, ``outlier_prob`` and ``clipping_value`` only), so a config always gets the default
    ``trim = 0.1``. From Python, an algorithm passes another trim with
    ``Statistic.make(..., aggregator="trimmed_mean", aggregator_params={"trim": 0.25})``.
    """

    name = "trimmed_mean"
    needs_all_samples = True
    default_trim = 0.1

    def __init__(self, trim: float = default_trim):
        super().__init__()
        trim = float(trim)
        if not 0.0 <= trim < 0.5:
            raise ValueError(f"trimmed_mean: trim must be in [0, 0.5), got {trim}")
        self.trim = trim

    def aggregate(self, x):
        x = np.asarray(x, np.float64)
        flat = x.reshape(len(x), -1)
        finite = np.isfinite(flat)
        s = np.sort(np.where(finite, flat, np.inf), axis=0)   # non-finite values sort last
        n = finite.sum(axis=0)
        k = np.floor(self.trim * n).astype(np.int64)
        i = np.arange(len(flat))[:, None]
        keep = (i >= k) & (i < n - k)
        with np.errstate(invalid="ignore"):
            out = np.where(keep, s, 0.0).sum(axis=0) / keep.sum(axis=0)
        usage.count("trimmed_mean")
        usage.record_trim(self.trim)
        return out.reshape(x.shape[1:]).astype(np.float32)

    def __repr__(self):
        return f"{type(self).__name__}(trim={self.trim})"
