"""Built-in aggregator ``mean_no_outliers``: the mean of the per-sample values inside their central
quantile range."""
import warnings

import numpy as np

from ovquant import hookimpl
from ovquant.statistics import Aggregator


def inliers(x: np.ndarray, alpha: float) -> np.ndarray:
    """``x`` (float64, ``[n_samples, ...]``) with NaN for every non-finite value and every value outside
    ``[quantile(x, alpha), quantile(x, 1 - alpha)]`` of its element (POT's ``no_outliers_estimator``).

    An element left with no value (2 distinct samples: both lie outside the interpolated quantiles)
    keeps all its finite values instead of becoming NaN."""
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():  # all-NaN elements stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(x, [alpha, 1.0 - alpha], axis=0)
    kept = np.where((x >= lo) & (x <= hi), x, np.nan)
    return np.where(np.isnan(kept).all(axis=0), x, kept)


class MeanNoOutliersAggregator(Aggregator):
    """``y = mean{x_i : q_alpha <= x_i <= q_(1-alpha)}`` per element over the samples, where ``q_p`` is the
    linear-interpolated ``p`` quantile of the element's finite values (``alpha = 0.01``, as in POT).
    Keeps every sample."""

    name = "mean_no_outliers"
    #: the reduction over the kept values (the median variant overrides it)
    reduce = staticmethod(np.nanmean)

    def __init__(self, alpha: float = 0.01):
        super().__init__()
        self.alpha = float(alpha)

    def aggregate(self, x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(self.reduce(inliers(np.asarray(x, np.float64), self.alpha), axis=0), np.float32)

    def __repr__(self):
        return f"{type(self).__name__}(alpha={self.alpha})"


@hookimpl
def register_aggregators(register):
    register(MeanNoOutliersAggregator)
