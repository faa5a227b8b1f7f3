"""Built-in estimator ``max``: the largest finite value of each slice."""
import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.statistics import Estimator, reduce_op


class MaxEstimator(Estimator):
    """``y = max(x)`` over the reduced axes, finite values only (NaN for a slice without any).

    In graph: ``ReduceMax`` (which does not skip NaN/Inf).
    """

    name = "max"

    def reduce(self, x, axes):
        x = np.asarray(x, dtype=np.float32)
        return np.fmax.reduce(np.where(np.isinf(x), np.nan, x), axis=axes)

    def graph_reduce(self, output, axes):
        return reduce_op("max", output, axes)


@hookimpl
def register_estimators(register):
    register(MaxEstimator)
