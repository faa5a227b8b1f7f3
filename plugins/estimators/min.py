"""Built-in estimator ``min``: the smallest finite value of each slice."""
import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.statistics import Estimator, reduce_op


class MinEstimator(Estimator):
    """``y = min(x)`` over the reduced axes, finite values only (NaN for a slice without any).

    In graph: ``ReduceMin`` (which does not skip NaN/Inf).
    """

    name = "min"

    def reduce(self, x, axes):
        x = np.asarray(x, dtype=np.float32)
        return np.fmin.reduce(np.where(np.isinf(x), np.nan, x), axis=axes)

    def graph_reduce(self, output, axes):
        return reduce_op("min", output, axes)


@hookimpl
def register_estimators(register):
    register(MinEstimator)
