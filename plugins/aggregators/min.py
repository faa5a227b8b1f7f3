"""Built-in aggregator ``min``: the streaming minimum of the per-sample values."""
import numpy as np

from ovquant import hookimpl
from ovquant.statistics import Aggregator


class MinAggregator(Aggregator):
    """``y = min_i x_i`` per element over the samples, finite values only (NaN where there is none).

    Streaming: keeps the running minimum only.
    """

    name = "min"
    needs_all_samples = False

    def __init__(self):
        super().__init__()
        self._min = None

    def update(self, values):
        values = np.atleast_1d(np.asarray(values, np.float32))  # a 0-d value is one sample
        if len(values):
            m = np.fmin.reduce(np.where(np.isinf(values), np.nan, values), axis=0)
            self._min = m if self._min is None else np.fmin(self._min, m)

    def result(self):
        if self._min is None:
            raise ValueError(f"aggregator {self.name!r} received no samples")
        return np.array(self._min, np.float32)


@hookimpl
def register_aggregators(register):
    register(MinAggregator)
