"""Built-in estimator ``abs_quantile``: a linear-interpolated quantile of the magnitudes of each slice."""
import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from .quantile import QuantileEstimator


class AbsQuantileEstimator(QuantileEstimator):
    """``y = quantile(|x|, q)`` over the reduced axes, linear interpolation (``np.quantile``), with
    ``q = outlier_prob`` on side ``min`` and ``q = 1 - outlier_prob`` on side ``max``; finite values only
    (NaN for a slice without any).

    In graph: ``Abs`` followed by the ``TopK`` form of ``quantile`` (same limits; does not skip NaN/Inf).
    """

    name = "abs_quantile"

    def _prepare(self, x):
        return np.abs(np.asarray(x))

    def _prepare_graph(self, output):
        return ops.abs(output)


@hookimpl
def register_estimators(register):
    register(AbsQuantileEstimator)
