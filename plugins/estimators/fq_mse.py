"""Built-in estimator ``fq_mse``: per sample, the mean squared error of fake-quantizing a tensor with a
per-tensor range scaled by each of several factors (the range search of layer-wise tuning)."""
import math

import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.quant_math import fake_quantize
from ovquant.statistics import Estimator


class FqMseEstimator(Estimator):
    """``e_f = mean((FQ_f(x) - x)^2)`` over the reduced axes for every factor ``f`` of ``factors``, where
    ``FQ_f`` is a FakeQuantize with ``levels`` levels on the range ``[low * f, high * f]`` (scaling both
    borders keeps the zero point on the grid). Non-finite values count as 0. Value per sample: ``[F]``
    (per channel: ``[C, F]``), so a ``mean`` aggregator gives each factor's mean squared error.

    ``max_elements`` (default: all) bounds the cost on large tensors: a per-tensor value is computed on
    every ``step``-th element of the flattened sample (see :meth:`step`).

    In graph: one FakeQuantize, Subtract, Multiply and ReduceMean per factor.
    """

    name = "fq_mse"
    range_estimator = False   # requested by algorithms, not named in a config

    def __init__(self, side="max", outlier_prob=1e-4, low=-1.0, high=1.0, levels=256, factors=(1.0,),
                 max_elements=None):
        super().__init__(side, outlier_prob)
        self.low, self.high, self.levels = float(low), float(high), int(levels)
        self.factors = tuple(float(f) for f in factors)
        self.max_elements = None if max_elements is None else int(max_elements)
        if not self.high > self.low:
            raise ValueError("fq_mse: high must be above low")

    def key(self):
        return (self.name, self.low, self.high, self.levels, self.factors, self.max_elements)

    def step(self, shape, axes) -> int:
        """The subsampling step (1: every element). Only a per-tensor value (``axes``: every non-batch
        axis) is subsampled: every ``step``-th element of the flattened sample, with ``step`` the smallest
        integer that leaves at most ``max_elements`` and shares no factor with any trailing size of the
        shape, so that every channel and every row and column offset is visited alike."""
        shape = [int(n) for n in shape]
        n = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if self.max_elements is None or n <= self.max_elements or tuple(axes) != tuple(range(1, len(shape))):
            return 1
        sizes = [int(np.prod(shape[i:])) for i in range(1, len(shape))]
        s = -(-n // self.max_elements)
        while any(math.gcd(s, z) != 1 for z in sizes):
            s += 1
        return s

    def _flat(self, x: np.ndarray, s: int) -> np.ndarray:
        return x.reshape(x.shape[0], -1)[:, ::s]

    def reduce(self, x, axes):
        x = np.asarray(x, np.float64)
        s = self.step(x.shape, axes)
        if s > 1:
            x = self._flat(x, s)
            axes = (1,)
        x = np.where(np.isfinite(x), x, 0.0)
        out = [np.mean((fake_quantize(x, self.low * f, self.high * f, self.levels) - x) ** 2, axis=axes)
               for f in self.factors]
        return np.stack(out, axis=-1).astype(np.float32)

    def graph_reduce(self, output, axes):
        if output.get_element_type().to_dtype() != np.float32 or not output.get_partial_shape().is_static:
            return None
        shape = [int(n) for n in output.get_shape()]
        rank, nf = len(shape), len(self.factors)
        i64 = lambda v: ops.constant(np.array(v, np.int64))
        s = self.step(shape, axes)
        if s > 1:
            n = int(np.prod(shape[1:]))
            flat = ops.reshape(output, i64([shape[0], n]), False)
            output = ops.strided_slice(flat, i64([0, 0]), i64([shape[0], n]), i64([1, s]), [0, 0], [0, 0]).output(0)
            shape, axes = [int(d) for d in output.get_shape()], (1,)
            rank = 2
        x = ops.unsqueeze(output, i64([1]))                                        # [B, 1, ...]
        tiled = ops.broadcast(x, i64([shape[0], nf] + shape[1:]))                  # [B, F, ...]
        f = np.asarray(self.factors, np.float64).reshape([1, nf] + [1] * (rank - 1))
        lo, hi = ops.constant((self.low * f).astype(np.float32)), ops.constant((self.high * f).astype(np.float32))
        d = ops.subtract(ops.fake_quantize(tiled, lo, hi, lo, hi, self.levels), x)
        kept = [0] + ([1 + a for a in range(1, rank) if a not in axes] if axes else [])
        red = [a for a in range(rank + 1) if a not in kept and a != 1]
        e = ops.reduce_mean(ops.multiply(d, d), i64(red), keep_dims=False) if red else ops.multiply(d, d)
        if len(kept) > 1:   # per channel: [B, F, C] -> [B, C, F]
            e = ops.transpose(e, i64([0] + list(range(2, len(kept) + 1)) + [1]))
        return e.output(0)


@hookimpl
def register_estimators(register):
    register(FqMseEstimator)
