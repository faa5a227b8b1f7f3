"""Built-in aggregator ``median``: the median of the per-sample values."""
import warnings

import numpy as np

from ovquant import hookimpl
from ovquant.statistics import Aggregator


class MedianAggregator(Aggregator):
    """``y = median_i x_i`` per element over the samples (``np.median``: the mean of the two middle
    values for an even count), finite values only (NaN where there is none). Keeps every sample."""

    name = "median"

    def aggregate(self, x):
        x = np.asarray(x, np.float64)
        with warnings.catch_warnings():  # "All-NaN slice encountered" gives NaN, as documented
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0), np.float32)


@hookimpl
def register_aggregators(register):
    register(MedianAggregator)
