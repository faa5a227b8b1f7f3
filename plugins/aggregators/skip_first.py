"""Built-in aggregator ``skip_first``: another aggregator over the samples after the first ``skip``."""
import numpy as np

from ovquant import hookimpl
from ovquant.registry import make_aggregator
from ovquant.statistics import Aggregator


class SkipFirstAggregator(Aggregator):
    """``y = inner(x_skip, x_skip+1, ...)``: aggregator ``inner`` over every sample but the first ``skip``
    (in the order the engine feeds them), so that those samples stay held back from the estimate.

    Streaming when ``inner`` is; it counts the rows it has seen and drops the first ``skip``. With no row
    after the first ``skip``: NaN (the caller treats the estimate as missing).
    """

    name = "skip_first"
    needs_all_samples = False

    def __init__(self, inner: str = "mean", skip: int = 0):
        super().__init__()
        self.inner = make_aggregator(inner)
        self.skip = int(skip)
        self.seen = 0
        self.used = 0

    def update(self, values):
        values = np.atleast_1d(np.asarray(values))
        drop = max(0, min(len(values), self.skip - self.seen))
        self.seen += len(values)
        if len(values) > drop:
            self.used += len(values) - drop
            self.inner.update(values[drop:])

    def result(self):
        if not self.used:
            return np.array(np.nan, np.float32)
        return self.inner.result()


@hookimpl
def register_aggregators(register):
    register(SkipFirstAggregator)
