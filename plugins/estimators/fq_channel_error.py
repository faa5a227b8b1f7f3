"""Built-in estimator ``fq_channel_error``: per sample and channel, the mean squared error of fake-quantizing
a tensor with each of several candidate ranges (per-tensor or per-channel borders)."""
import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.quant_math import fake_quantize
from ovquant.statistics import Estimator


#: the positions a dynamic dimension counts as when the stride is planned
DYNAMIC_NOMINAL = 64


class FqChannelErrorEstimator(Estimator):
    """``e[c, k] = mean over the reduced axes of (FQ_k(x) - x)^2`` in channel ``c``, for every candidate
    range ``k``: ``FQ_k`` is a FakeQuantize with ``levels`` levels on ``[lows[k], highs[k]]``, each a tuple
    of one border (per tensor) or one per channel. Non-finite values count as 0. Value per sample: ``[C, K]``
    (the statistic's channel axis keeps ``C``); a ``mean`` aggregator gives each candidate's mean squared
    error per channel.

    ``max_positions`` (default: all) bounds the cost on large tensors: the error is computed on every
    ``s``-th position along each axis but the batch and channel axes, ``s`` the smallest odd stride that
    leaves at most ``max_positions`` positions per channel (odd, so that it does not alias with the
    stride-2 grids of convolutions). A dimension unknown when the graph is planned (a dynamic width) counts
    as ``DYNAMIC_NOMINAL`` positions, and the stride planned for the graph is the one numpy uses too.

    In graph: one StridedSlice, then the FakeQuantize written out (Maximum, Minimum, Subtract, Multiply,
    Round half to even as numpy rounds, Multiply, Add), Subtract, Multiply, ReduceMean. Where every axis but
    the batch and channel axes is reduced (the choice stages' case), those ops come once for all ``K``
    candidates: the tensor reshaped to ``[B, C, P, 1]`` against borders of shape ``[C, 1, K]`` (a per-tensor
    candidate's border repeated over ``C``; ``[1, 1, K]`` when every candidate is per tensor), then
    ReduceMean over ``P``. Otherwise once per candidate. The plugin's compile time grows with the number of
    ops: on iris-lm's granularity stage this is 1357 ops instead of 1746.
    """

    name = "fq_channel_error"
    range_estimator = False   # requested by algorithms, not named in a config
    graph_dynamic = True

    def __init__(self, side="max", outlier_prob=1e-4, lows=((0.0,),), highs=((1.0,),), levels=256, axis=1,
                 max_positions=None):
        super().__init__(side, outlier_prob)
        self.max_positions = None if max_positions is None else int(max_positions)
        self.lows = tuple(tuple(float(v) for v in lo) for lo in lows)
        self.highs = tuple(tuple(float(v) for v in hi) for hi in highs)
        self.levels, self.axis = int(levels), int(axis)
        if len(self.lows) != len(self.highs) or not self.lows:
            raise ValueError("fq_channel_error: lows and highs need one entry per candidate")

    def key(self):
        return (self.name, self.lows, self.highs, self.levels, self.axis, self.max_positions)

    def stride(self, shape) -> int:
        """The subsampling stride ``s`` (1: every position) for a tensor of ``shape``."""
        other = [int(n) for a, n in enumerate(shape) if a not in (0, self.axis % len(shape))]
        s = 1
        while self.max_positions is not None and np.prod([-(-n // s) for n in other]) > self.max_positions:
            s += 2
        return s

    def _steps(self, rank: int, s: int) -> list:
        return [1 if a in (0, self.axis % rank) else s for a in range(rank)]

    def _border(self, values, rank: int) -> np.ndarray:
        v = np.asarray(values, np.float64)
        shape = [1] * rank
        if v.size > 1:
            shape[self.axis] = v.size
        return v.reshape(shape)

    def reduce(self, x, axes):
        x = np.asarray(x, np.float64)
        s = getattr(self, "planned_stride", None) or self.stride(x.shape)
        x = x[tuple(slice(None, None, st) for st in self._steps(x.ndim, s))]
        x = np.where(np.isfinite(x), x, 0.0)
        out = []
        for lo, hi in zip(self.lows, self.highs):
            lo, hi = self._border(lo, x.ndim), self._border(hi, x.ndim)
            out.append(np.mean((fake_quantize(x, lo, hi, self.levels) - x) ** 2, axis=axes))
        return np.stack(out, axis=-1).astype(np.float32)

    def graph_reduce(self, output, axes):
        if output.get_element_type().to_dtype() != np.float32 or not output.get_partial_shape().rank.is_static:
            return None
        ps = output.get_partial_shape()
        rank = ps.rank.get_length()
        shape = [d.get_length() if d.is_static else DYNAMIC_NOMINAL for d in ps]
        s = self.stride(shape)
        if not ps.is_static:
            self.planned_stride = s
        if s > 1:
            i64 = lambda v: np.array(v, np.int64)
            output = ops.strided_slice(output, i64([0] * rank), i64([0] * rank), i64(self._steps(rank, s)),
                                       [1] * rank, [1] * rank).output(0)   # masks: every axis from start to end
        ax = self.axis % rank
        if len(self.lows) > 1 and sorted(axes or ()) == [a for a in range(1, rank) if a != ax] and \
                len({len(v) for v in self.lows + self.highs} - {1}) <= 1:
            return self._graph_broadcast(output, rank, ax)
        errs = []
        for lo, hi in zip(self.lows, self.highs):
            e = _squared_fq_error(output, self._border(lo, rank), self._border(hi, rank), self.levels)
            if axes:
                e = ops.reduce_mean(e, np.array(axes, np.int64), keep_dims=False)
            errs.append(ops.unsqueeze(e, np.array([-1], np.int64)))
        return (ops.concat(errs, -1) if len(errs) > 1 else errs[0]).output(0)

    def _graph_broadcast(self, output, rank: int, ax: int):
        """Every candidate at once: the tensor as ``[B, C, P, 1]`` against borders of shape ``[C, 1, K]``
        (``[1, 1, K]`` when every candidate is per tensor), one broadcast FakeQuantize (written out as
        above) for all candidates, mean over ``P``: ``[B, C, K]``."""
        i64 = lambda v: ops.constant(np.array(v, np.int64))
        if ax != 1:
            output = ops.transpose(output, i64([0, ax] + [a for a in range(1, rank) if a != ax])).output(0)
        x = ops.unsqueeze(ops.reshape(output, i64([0, 0, -1]), True), i64([-1]))
        n = max(len(v) for v in self.lows + self.highs)
        lo = np.stack([np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in self.lows], -1)[:, None, :]
        hi = np.stack([np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in self.highs], -1)[:, None, :]
        return ops.reduce_mean(_squared_fq_error(x, lo, hi, self.levels), i64([2]), keep_dims=False).output(0)


def _squared_fq_error(x, lo: np.ndarray, hi: np.ndarray, levels: int):
    """``(FQ(x) - x)^2`` in graph, ``FQ`` on ``[lo, hi]`` (borders broadcast against ``x``) with ``levels``
    levels, written out (Clamp is per tensor, so Maximum/Minimum; Round half to even as numpy rounds): no
    FakeQuantize op for the plugin's low-precision passes to fold into the model, which made compiling slow."""
    step = np.where(hi > lo, hi - lo, 1.0) / (levels - 1)
    f32 = lambda v: ops.constant(np.asarray(v, np.float32))
    c = ops.minimum(ops.maximum(x, f32(np.minimum(lo, hi))), f32(np.maximum(lo, hi)))
    r = ops.round(ops.multiply(ops.subtract(c, f32(lo)), f32(1.0 / step)), "half_to_even")
    d = ops.subtract(ops.add(ops.multiply(r, f32(step)), f32(lo)), x)
    return ops.multiply(d, d)


@hookimpl
def register_estimators(register):
    register(FqChannelErrorEstimator)
