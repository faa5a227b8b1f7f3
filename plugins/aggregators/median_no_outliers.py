"""Built-in aggregator ``median_no_outliers``: the median of the per-sample values inside their central
quantile range."""
import numpy as np

from ovquant import hookimpl

from .mean_no_outliers import MeanNoOutliersAggregator


class MedianNoOutliersAggregator(MeanNoOutliersAggregator):
    """``y = median{x_i : q_alpha <= x_i <= q_(1-alpha)}`` per element over the samples, where ``q_p`` is
    the linear-interpolated ``p`` quantile of the element's finite values (``alpha = 0.01``, as in POT).
    Keeps every sample."""

    name = "median_no_outliers"
    reduce = staticmethod(np.nanmedian)


@hookimpl
def register_aggregators(register):
    register(MedianNoOutliersAggregator)
