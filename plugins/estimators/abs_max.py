"""Built-in estimator ``abs_max``: the largest finite magnitude of each slice."""
import numpy as np

from ovquant import hookimpl
from ovquant.graph import is_nonnegative
from ovquant.statistics import Estimator, reduce_op


class AbsMaxEstimator(Estimator):
    """``y = max(|x|)`` over the reduced axes, finite values only (NaN for a slice without any).

    In graph: ``ReduceMax`` when the tensor is non-negative by construction (after ReLU, ReLU6,
    Sigmoid, ...), else the two outputs ``ReduceMax(x)`` and ``ReduceMin(x)``, combined in numpy as
    ``max(hi, -lo)`` (exactly ``max |x|``); both reductions are shared with the ``max`` and ``min``
    estimators of the same tensor, so next to ``min`` it adds one ReduceMax and no elementwise op (the
    plugin's compile time grows with the number of ops). The in-graph form does not skip NaN/Inf.
    """

    name = "abs_max"
    graph_dynamic = True   # exact: the same value in graph and in numpy whatever the shape

    def reduce(self, x, axes):
        x = np.abs(np.asarray(x, dtype=np.float32))
        return np.fmax.reduce(np.where(np.isinf(x), np.nan, x), axis=axes)

    def graph_reduce(self, output, axes):
        hi = reduce_op("max", output, axes)
        if is_nonnegative(output):
            return hi
        return hi, reduce_op("min", output, axes)

    def from_graph_parts(self, hi, lo):
        return np.maximum(hi, -lo)


@hookimpl
def register_estimators(register):
    register(AbsMaxEstimator)
