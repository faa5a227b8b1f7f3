"""Aggregator ``trimmed_mean``: the mean of the per-sample values after dropping the extremes."""
import attrs
import numpy as np

from ovquant.errors import ConfigError
from ovquant.statistics import Aggregator

from . import usage


class TrimmedMeanAggregator(Aggregator):
    """``y = mean(sorted(x)[k : n - k])`` per element over the ``n`` samples with a finite value, with
    ``k = floor(trim * n)`` values dropped at each end (``scipy.stats.trim_mean``); NaN where no sample
    is finite. ``trim`` is in ``[0, 0.5)``: 0 is the plain mean, values near 0.5 approach the median.

    Keeps every sample (the order statistics need them all).

    A config sets ``trim`` with ``"aggregator": "trimmed_mean", "aggregator_params": {"trim": 0.25}``
    (default 0.1); from Python, an algorithm passes it with
    ``Statistic.make(..., aggregator="trimmed_mean", aggregator_params={"trim": 0.25})``.
    """

    name = "trimmed_mean"
    needs_all_samples = True
    default_trim = 0.1

    @attrs.define(kw_only=True, frozen=True)
    class params_class:   # noqa: N801 (the declaration ovquant reads: what a config may give)
        trim: float = 0.1

    @staticmethod
    def validate_params(p, path: str) -> None:
        if not 0.0 <= p.trim < 0.5:
            raise ConfigError(f"{path}.trim: must be in [0, 0.5), got {p.trim}")

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
