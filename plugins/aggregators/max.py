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
    #: the NaN-skipping elementwise extreme (the min aggregator uses np.fmin)
    extreme = np.fmax

    def __init__(self):
        super().__init__()
        self._value = None

    def update(self, values):
        values = np.atleast_1d(np.asarray(values, np.float32))  # a 0-d value is one sample
        if len(values):
            m = self.extreme.reduce(np.where(np.isinf(values), np.nan, values), axis=0)
            self._value = m if self._value is None else self.extreme(self._value, m)

    def result(self):
        if self._value is None:
            raise ValueError(f"aggregator {self.name!r} received no samples")
        return np.array(self._value, np.float32)


@hookimpl
def register_aggregators(register):
    register(MaxAggregator)
