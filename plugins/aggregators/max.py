"""Built-in aggregator ``max``: the streaming maximum of the per-sample values."""
import numpy as np

from ovquant import hookimpl
from ovquant.statistics import Aggregator


class MaxAggregator(Aggregator):
    """``y = max_i x_i`` per element over the samples, finite values only (NaN where there is none).

    Streaming: keeps the running maximum only.
    """

    name = "max"
    needs_all_samples = False

    def __init__(self):
        super().__init__()
        self._max = None

    def update(self, values):
        values = np.atleast_1d(np.asarray(values, np.float32))  # a 0-d value is one sample
        if len(values):
            m = np.fmax.reduce(np.where(np.isinf(values), np.nan, values), axis=0)
            self._max = m if self._max is None else np.fmax(self._max, m)

    def result(self):
        if self._max is None:
            raise ValueError(f"aggregator {self.name!r} received no samples")
        return np.array(self._max, np.float32)


@hookimpl
def register_aggregators(register):
    register(MaxAggregator)
