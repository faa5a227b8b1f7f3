"""Built-in aggregator ``median_no_outliers``: the median of the per-sample values inside their central
quantile range."""
import warnings

import numpy as np

from ovquant import hookimpl
from ovquant.statistics import Aggregator

from .mean_no_outliers import inliers


class MedianNoOutliersAggregator(Aggregator):
    """``y = median{x_i : q_alpha <= x_i <= q_(1-alpha)}`` per element over the samples, where ``q_p`` is
    the linear-interpolated ``p`` quantile of the element's finite values (``alpha = 0.01``, as in POT).
    Keeps every sample."""

    name = "median_no_outliers"

    def __init__(self, alpha: float = 0.01):
        super().__init__()
        self.alpha = float(alpha)

    def aggregate(self, x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(np.nanmedian(inliers(np.asarray(x, np.float64), self.alpha), axis=0), np.float32)

    def __repr__(self):
        return f"{type(self).__name__}(alpha={self.alpha})"


@hookimpl
def register_aggregators(register):
    register(MedianNoOutliersAggregator)
