"""Built-in estimator ``fq_channel_error``: per sample and channel, the mean squared error of fake-quantizing
a tensor with each of several candidate ranges (per-tensor or per-channel borders)."""
import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.quant_math import fake_quantize
from ovquant.statistics import Estimator


class FqChannelErrorEstimator(Estimator):
    """``e[c, k] = mean over the reduced axes of (FQ_k(x) - x)^2`` in channel ``c``, for every candidate
    range ``k``: ``FQ_k`` is a FakeQuantize with ``levels`` levels on ``[lows[k], highs[k]]``, each a tuple
    of one border (per tensor) or one per channel. Non-finite values count as 0. Value per sample: ``[C, K]``
    (the statistic's channel axis keeps ``C``); a ``mean`` aggregator gives each candidate's mean squared
    error per channel.

    In graph: per candidate one FakeQuantize, Subtract, Multiply and ReduceMean.
    """

    name = "fq_channel_error"
    range_estimator = False   # requested by algorithms, not named in a config

    def __init__(self, side="max", outlier_prob=1e-4, lows=((0.0,),), highs=((1.0,),), levels=256, axis=1):
        super().__init__(side, outlier_prob)
        self.lows = tuple(tuple(float(v) for v in lo) for lo in lows)
        self.highs = tuple(tuple(float(v) for v in hi) for hi in highs)
        self.levels, self.axis = int(levels), int(axis)
        if len(self.lows) != len(self.highs) or not self.lows:
            raise ValueError("fq_channel_error: lows and highs need one entry per candidate")

    def key(self):
        return (self.name, self.lows, self.highs, self.levels, self.axis)

    def _border(self, values, rank: int) -> np.ndarray:
        v = np.asarray(values, np.float64)
        shape = [1] * rank
        if v.size > 1:
            shape[self.axis] = v.size
        return v.reshape(shape)

    def reduce(self, x, axes):
        x = np.asarray(x, np.float64)
        x = np.where(np.isfinite(x), x, 0.0)
        out = []
        for lo, hi in zip(self.lows, self.highs):
            lo, hi = self._border(lo, x.ndim), self._border(hi, x.ndim)
            out.append(np.mean((fake_quantize(x, lo, hi, self.levels) - x) ** 2, axis=axes))
        return np.stack(out, axis=-1).astype(np.float32)

    def graph_reduce(self, output, axes):
        if output.get_element_type().to_dtype() != np.float32 or not output.get_partial_shape().rank.is_static:
            return None
        rank = output.get_partial_shape().rank.get_length()
        errs = []
        for lo, hi in zip(self.lows, self.highs):
            lo = ops.constant(self._border(lo, rank).astype(np.float32))
            hi = ops.constant(self._border(hi, rank).astype(np.float32))
            d = ops.subtract(ops.fake_quantize(output, lo, hi, lo, hi, self.levels), output)
            e = ops.multiply(d, d)
            if axes:
                e = ops.reduce_mean(e, np.array(axes, np.int64), keep_dims=False)
            errs.append(ops.unsqueeze(e, np.array([-1], np.int64)))
        return (ops.concat(errs, -1) if len(errs) > 1 else errs[0]).output(0)


@hookimpl
def register_estimators(register):
    register(FqChannelErrorEstimator)
