"""Built-in aggregator ``mean``: the streaming mean of the per-sample values."""
import numpy as np

from ovquant import hookimpl
from ovquant.statistics import Aggregator


class MeanAggregator(Aggregator):
    """``y = sum_i x_i / n`` per element over the samples, finite values only (NaN where there is none).

    Streaming: a float64 running sum and count, added in the order :meth:`update` is called.
    """

    name = "mean"
    needs_all_samples = False

    def __init__(self):
        super().__init__()
        self._sum = self._count = None

    def update(self, values):
        values = np.atleast_1d(np.asarray(values, np.float64))  # a 0-d value is one sample
        if not len(values):
            return
        finite = np.isfinite(values)
        total, count = np.sum(values, axis=0, where=finite), np.count_nonzero(finite, axis=0)
        if self._sum is None:
            self._sum, self._count = total, count
        else:
            self._sum, self._count = self._sum + total, self._count + count

    def result(self):
        if self._sum is None:
            raise ValueError(f"aggregator {self.name!r} received no samples")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(self._sum / self._count, np.float32)


@hookimpl
def register_aggregators(register):
    register(MeanAggregator)
