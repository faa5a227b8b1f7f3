"""Built-in aggregator ``min``: the streaming minimum of the per-sample values."""
import numpy as np

from ovquant import hookimpl

from .max import MaxAggregator


class MinAggregator(MaxAggregator):
    """``y = min_i x_i`` per element over the samples, finite values only (NaN where there is none).

    Streaming: keeps the running minimum only.
    """

    name = "min"
    extreme = np.fmin


@hookimpl
def register_aggregators(register):
    register(MinAggregator)
