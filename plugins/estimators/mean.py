"""Built-in estimator ``mean``: the mean of the finite values of each slice."""
import warnings

import numpy as np

from ovquant import hookimpl
from ovquant.statistics import Estimator, reduce_op


class MeanEstimator(Estimator):
    """``y = sum(x) / count(x)`` over the reduced axes, finite values only, summed in float64 (NaN for a
    slice without any finite value).

    In graph: ``ReduceMean`` (float32, does not skip NaN/Inf), also on dynamic shapes (the reduced axes
    may be dynamic; the kept channel axis is static in the layers that request it).
    """

    name = "mean"
    range_estimator = False   # requested by algorithms, not named in a config
    graph_dynamic = True

    def reduce(self, x, axes):
        x = np.asarray(x)
        with warnings.catch_warnings():  # "Mean of empty slice" gives NaN, as documented
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.mean(x, axis=axes, dtype=np.float64, where=np.isfinite(x)).astype(np.float32)

    def graph_reduce(self, output, axes):
        return reduce_op("mean", output, axes)


@hookimpl
def register_estimators(register):
    register(MeanEstimator)
