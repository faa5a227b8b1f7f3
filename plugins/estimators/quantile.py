"""Built-in estimator ``quantile``: a linear-interpolated quantile of each slice."""
import math
import warnings

import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.statistics import Estimator


class QuantileEstimator(Estimator):
    """``y = quantile(x, q)`` over the reduced axes, linear interpolation (``np.quantile``), with
    ``q = outlier_prob`` on side ``min`` and ``q = 1 - outlier_prob`` on side ``max``; finite values only
    (NaN for a slice without any).

    In graph (static shapes, small tails only): the reduced axes are flattened to the last axis and
    ``TopK(k)`` keeps the ``k = ceil(outlier_prob * (N - 1)) + 2`` most extreme values of the side, from
    which :meth:`from_graph` interpolates exactly what ``np.quantile`` gives on the whole slice.
    The in-graph form does not skip NaN/Inf.
    """

    name = "quantile"
    uses_outlier_prob = True
    #: largest TopK the in-graph form uses; beyond it the numpy form runs
    max_topk = 1024

    def _prepare(self, x):
        return np.asarray(x)

    def _prepare_graph(self, output):
        return output

    def q(self) -> np.float64:
        # a numpy float64 (not a Python float) makes np.quantile interpolate in float64 for float32 data
        return np.float64(self.outlier_prob if self.side == "min" else 1.0 - self.outlier_prob)

    def reduce(self, x, axes):
        x = self._prepare(x)
        if not axes:
            return np.where(np.isfinite(x), x, np.nan).astype(np.float32)
        finite = np.isfinite(x)
        if finite.all():
            return np.asarray(np.quantile(x, self.q(), axis=axes), np.float32)
        with warnings.catch_warnings():  # "All-NaN slice encountered" gives NaN, as documented
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(np.nanquantile(np.where(finite, x, np.nan), self.q(), axis=axes), np.float32)

    def graph_reduce(self, output, axes):
        pshape = output.get_partial_shape()
        if pshape.is_dynamic:
            return None
        shape = list(pshape.to_shape())
        axes = sorted({a % len(shape) for a in axes}) if shape else []
        keep = [a for a in range(len(shape)) if a not in axes]
        n = math.prod(shape[a] for a in axes)
        k = min(math.ceil(self.outlier_prob * (n - 1)) + 2, n)
        if n == 0 or k > self.max_topk:
            return None
        x = self._prepare_graph(output)
        self.n, self.k = n, k
        kept = [shape[a] for a in keep]
        if len(keep) >= 2:
            # per channel: lay the reduced elements out along axis 1 ([b, n, c]), the channels innermost,
            # so that TopK runs across one long axis (docs/benchmarks.md)
            inner = math.prod(kept[1:])
            x = ops.transpose(x, np.array(keep[:1] + axes + keep[1:], np.int64))
            x = ops.reshape(x, np.array([kept[0], n, inner], np.int64), special_zero=False)
            top = ops.topk(x, np.int64(k), axis=1, mode=self.side, sort="value").output(0)   # [b, k, inner]
            top = ops.transpose(top, np.array([0, 2, 1], np.int64))
            return ops.reshape(top, np.array(kept + [k], np.int64), special_zero=False).output(0)
        if keep + axes != list(range(len(shape))):
            x = ops.transpose(x, np.array(keep + axes, np.int64))
        x = ops.reshape(x, np.array(kept + [n], np.int64), special_zero=False)
        return ops.topk(x, np.int64(k), axis=-1, mode=self.side, sort="value").output(0)

    def from_graph(self, value):
        # value[..., t] is the t-th most extreme value of the side: sorted position t on side "min",
        # n - 1 - t on side "max". Interpolate between the sorted positions floor(v) and floor(v) + 1.
        value, n = np.asarray(value), self.n
        v = (n - 1) * self.q()
        lo = min(int(np.floor(v)), n - 1)
        hi, g = min(lo + 1, n - 1), v - lo
        if self.side == "max":
            lo, hi = n - 1 - lo, n - 1 - hi
        a, b = value[..., lo], value[..., hi]
        d = b - a  # same arithmetic as numpy's _lerp
        return np.asarray(np.where(g >= 0.5, b - d * (1 - g), a + d * g), np.float32)


@hookimpl
def register_estimators(register):
    register(QuantileEstimator)
