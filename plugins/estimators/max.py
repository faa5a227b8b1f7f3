"""Built-in estimator ``max``: the largest finite value of each slice."""
import numpy as np

from ovquant import hookimpl
from ovquant.statistics import Estimator, reduce_op


class MaxEstimator(Estimator):
    """``y = max(x)`` over the reduced axes, finite values only (NaN for a slice without any).

    In graph: ``ReduceMax`` (which does not skip NaN/Inf).
    """

    name = "max"
    graph_dynamic = True   # exact: the same value in graph and in numpy whatever the shape
    #: the NaN-skipping reduction and the matching in-graph reduction (the min estimator mirrors them)
    extreme = np.fmax
    graph_kind = "max"

    def reduce(self, x, axes):
        x = np.asarray(x, dtype=np.float32)
        return self.extreme.reduce(np.where(np.isinf(x), np.nan, x), axis=axes)

    def graph_reduce(self, output, axes):
        return reduce_op(self.graph_kind, output, axes)


@hookimpl
def register_estimators(register):
    register(MaxEstimator)
