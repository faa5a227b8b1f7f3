"""Built-in estimator ``min``: the smallest finite value of each slice."""
import numpy as np

from ovquant import hookimpl

from .max import MaxEstimator


class MinEstimator(MaxEstimator):
    """``y = min(x)`` over the reduced axes, finite values only (NaN for a slice without any).

    In graph: ``ReduceMin`` (which does not skip NaN/Inf).
    """

    name = "min"
    graph_dynamic = True   # exact: the same value in graph and in numpy whatever the shape
    extreme = np.fmin
    graph_kind = "min"


@hookimpl
def register_estimators(register):
    register(MinEstimator)
