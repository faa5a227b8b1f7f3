"""Estimator ``mse_range``: per sample, the clipping threshold that minimises the quantization MSE.

For each slice ``x`` of one sample (the whole tensor per tensor, or one channel per channel) with
``m = max|x|``, the candidates are ``t = k/64 * m`` for ``k = 3..64``. A candidate ``t`` is scored by
the squared error of quantizing ``x`` on the grid MinMaxQuantization builds from it:

* a slice with a negative value: signed, step ``s = t/127``, integers ``-128..127``
  (MinMax's symmetric 8-bit activations: ``hi = t``, ``lo = -t*128/127``);
* a non-negative slice: unsigned, step ``s = t/255``, integers ``0..255``.

The value per sample is the best ``t`` on side ``max`` and the matching lower border on side ``min``
(``-t*128/127`` for a signed slice, ``0`` for a non-negative one), so that the estimator can serve
either border (in asymmetric mode too, where it proposes the symmetric range).

Two ways to score, chosen by the number ``n`` of values per slice only (so both forms of the
estimator always agree):

* ``n <= 2048``: exactly, in numpy (``n * 62`` quantizations per slice). No in-graph form: such a
  slice is small, and the search is not a reduction OpenVINO has an op for.
* ``n > 2048``: from a histogram of ``z = (x/m + 1) * 2048`` (2048 bins per sign, bin ``j`` holds
  ``j <= z < j + 1``): per bin the count ``N`` and the sum ``D`` of ``z - (j + 1/2)``. A whole bin is
  quantized to the grid point nearest to its centre; the error of every candidate then follows from
  cumulative sums of ``N`` and ``D`` over the bins of each grid cell, clipped values included. It is
  exact but for two things: the spread of the values inside their bins, which is the same for every
  candidate and so cannot change the choice, and bins that straddle a cell border. A bin is 1/16 of a
  step wide at ``t = m`` (1/8 for a non-negative slice) and wider than a step only for the smallest
  candidates (``t < m/16``, resp. ``t < m/8``). **In graph**: ``ReduceMin``/``ReduceMax`` (shared with the ``min``/``max``/``abs_max``
  estimators), the bin index, and two ``ScatterElementsUpdate`` ops with ``reduction="sum"`` that build
  the histograms; only ``2 + 4*2048`` floats per slice leave OpenVINO, and :meth:`from_graph` runs the
  search on them. The numpy form builds the same histograms with the same float32 arithmetic.

MinMaxQuantization also accepts it for weights (``weights.range_estimator.max.type``): it calls the
numpy form once on the weight constant, per output channel. The grid above is 8-bit; for 4-bit
weights use ``mse_range_w4`` (below), since ovquant does not tell an estimator the bits it serves.

The in-graph form is skipped (numpy runs instead) when it would return more than
``max_graph_floats`` floats per sample (per-channel statistics of wide tensors). Like the built-in
estimators, the numpy form ignores NaN/Inf and the in-graph form does not.
"""
from functools import lru_cache

import attrs
import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovquant.errors import ConfigError
from ovquant.statistics import Estimator, reduce_op

from . import usage


@attrs.define(kw_only=True, frozen=True)
class MSERangeParams:
    """What a config may give ``mse_range`` (``range_estimator.max.params``): the histogram bins per sign
    and the integer grids the search scores against (``[lo, hi]`` of a slice with negative values, and of
    a non-negative one)."""

    bins: int = 2048
    signed_levels: tuple[int, int] = (-128, 127)
    unsigned_levels: tuple[int, int] = (0, 255)


def validate_mse_params(p: MSERangeParams, path: str) -> None:
    if not 16 <= p.bins <= 65536:
        raise ConfigError(f"{path}.bins: must be between 16 and 65536, got {p.bins}")
    if not p.signed_levels[0] < 0 < p.signed_levels[1]:
        raise ConfigError(f"{path}.signed_levels: expected [lo, hi] with lo < 0 < hi, got {list(p.signed_levels)}")
    if not p.unsigned_levels[0] == 0 < p.unsigned_levels[1]:
        raise ConfigError(f"{path}.unsigned_levels: expected [0, hi] with hi > 0, got {list(p.unsigned_levels)}")


class MSERangeEstimator(Estimator):
    """Per sample, the MSE-optimal clipping threshold of each slice (see the module docstring)."""

    name = "mse_range"
    params_class = MSERangeParams
    validate_params = staticmethod(validate_mse_params)
    #: integer grid of a slice with negative values (lo, hi): the step is t / hi (the class's default;
    #: an instance holds its params' value)
    signed_levels = MSERangeParams().signed_levels
    #: integer grid of a non-negative slice
    unsigned_levels = MSERangeParams().unsigned_levels
    #: candidates t = k / steps * max|x| for k = first_step .. steps
    steps = 64
    first_step = 3
    #: slices of at most this many values are scored exactly (numpy); larger ones through the histogram
    exact_max = 2048
    #: histogram bins per sign
    bins = MSERangeParams().bins
    #: largest in-graph output, in floats per sample, before the numpy form is used instead
    max_graph_floats = 1 << 21
    #: most candidate quantizations held in memory at once by the exact search
    _exact_chunk = 1 << 22

    def __init__(self, side="max", outlier_prob=1e-4, **params):
        super().__init__(side, outlier_prob)
        p = self.params_class(**params)   # the declared defaults for what is not given
        self.bins, self.signed_levels, self.unsigned_levels = int(p.bins), tuple(p.signed_levels), tuple(p.unsigned_levels)

    def key(self):
        # the value depends on the side (the engine must not share one reduction between min and max)
        # and on the params
        return (self.name, self.side) + self.params_key()

    # ---- shared -----------------------------------------------------------------------------------
    @classmethod
    def fractions(cls) -> np.ndarray:
        """The candidate thresholds as fractions of max|x|, ascending."""
        return np.arange(cls.first_step, cls.steps + 1, dtype=np.float64) / cls.steps

    def _value(self, f: np.ndarray, m: np.ndarray, signed: np.ndarray) -> np.ndarray:
        """The border of side ``self.side`` for the chosen fractions ``f`` of ``m = max|x|``."""
        t = np.where(m > 0, f * m, 0.0)
        if self.side == "max":
            out = t
        else:
            (sl, sh), (ul, uh) = self.signed_levels, self.unsigned_levels
            out = np.where(signed, t * sl / sh, t * ul / uh)
        if self.side == "max":
            usage.record_fractions(self.name, f[m > 0])
        return out.astype(np.float32)

    @staticmethod
    def _best(err: np.ndarray) -> np.ndarray:
        """Index of the smallest error per row; ties go to the larger threshold (less clipping)."""
        k = err.shape[1]
        return k - 1 - np.argmin(err[:, ::-1], axis=1)

    @staticmethod
    def _layout(shape, axes):
        rank = len(shape)
        axes = sorted({a % rank for a in axes}) if rank else []
        keep = [a for a in range(rank) if a not in axes]
        kept = [int(shape[a]) for a in keep]
        n = int(np.prod([shape[a] for a in axes], dtype=np.int64)) if axes else 1
        return keep, axes, kept, n

    # ---- numpy form -------------------------------------------------------------------------------
    def reduce(self, x, axes):
        x = np.asarray(x, np.float32)
        keep, axes, kept, n = self._layout(x.shape, axes)
        rows = np.transpose(x, keep + axes).reshape(-1, n) if x.ndim else x.reshape(1, 1)
        if n == 0:
            return np.zeros(kept, np.float32)
        if n <= self.exact_max:
            f, m, signed = self.search_exact(rows)
        else:
            f, m, signed = self.search_histogram(self.histogram(rows))
        usage.count(f"{self.name}.numpy", len(rows))
        return self._value(f, m, signed).reshape(kept)

    def search_exact(self, rows: np.ndarray) -> tuple:
        """(best fraction, max|x|, signed) per row of ``rows`` ``[R, n]``, scoring every candidate exactly."""
        finite = np.isfinite(rows)
        v = np.where(finite, rows, 0.0).astype(np.float64)   # 0 is on every grid: adds no error
        mn, mx = v.min(axis=1), v.max(axis=1)
        m, signed = np.maximum(mx, -mn), mn < 0
        fr = self.fractions()
        lo = np.where(signed, self.signed_levels[0], self.unsigned_levels[0]).astype(np.float64)
        hi = np.where(signed, self.signed_levels[1], self.unsigned_levels[1]).astype(np.float64)
        err = np.empty((len(v), len(fr)))
        chunk = max(1, self._exact_chunk // (len(fr) * v.shape[1]))
        for i in range(0, len(v), chunk):
            vv, sl = v[i:i + chunk, None, :], slice(i, i + chunk)
            s = (m[sl, None] * fr[None, :] / hi[sl, None])[..., None]           # [r, K, 1]
            q = np.clip(np.rint(vv / np.where(s > 0, s, 1.0)), lo[sl, None, None], hi[sl, None, None]) * s
            err[sl] = ((vv - q) ** 2).sum(axis=-1)
        return fr[self._best(err)], m, signed

    def histogram(self, rows: np.ndarray) -> np.ndarray:
        """``[R, 2 + 4B]``: min, max, then the histograms N and D of each row (what the graph computes)."""
        b2 = 2 * self.bins
        rows = np.asarray(rows, np.float32)
        finite = np.isfinite(rows)
        any_finite = finite.any(axis=1)
        mn = np.where(any_finite, np.where(finite, rows, np.inf).min(axis=1), 0).astype(np.float32)
        mx = np.where(any_finite, np.where(finite, rows, -np.inf).max(axis=1), 0).astype(np.float32)
        m = np.maximum(mx, -mn)
        bf = np.float32(self.bins)
        scale = bf / np.where(m > 0, m, np.float32(1))
        z = np.where(finite, rows, np.float32(0)) * scale[:, None] + bf
        jf = np.clip(np.floor(z), 0, b2 - 1)
        dz = z - jf - np.float32(0.5)
        idx = (jf.astype(np.int64) + (np.arange(len(rows), dtype=np.int64) * b2)[:, None]).ravel()
        size = len(rows) * b2
        hist = [np.bincount(idx, weights=wt.ravel(), minlength=size).reshape(len(rows), b2)
                for wt in (finite.astype(np.float64), (dz * finite).astype(np.float64))]
        return np.concatenate([mn[:, None], mx[:, None]] + hist, axis=1)

    def _cells(self, signed: bool) -> tuple:
        """Per candidate, the first bin of each grid cell (``[K, cells + 1]``), and the cell values."""
        return _cells(self.signed_levels if signed else self.unsigned_levels, self.bins,
                      tuple(self.fractions()))

    def search_histogram(self, h: np.ndarray) -> tuple:
        """(best fraction, max|x|, signed) per row of the histograms ``h`` ``[R, 2 + 4B]``."""
        b2 = 2 * self.bins
        h = np.asarray(h, np.float64).reshape(-1, 2 + 2 * b2)
        mn, mx = h[:, 0], h[:, 1]
        m, signed = np.maximum(mx, -mn), mn < 0
        n_, d1 = h[:, 2:2 + b2], h[:, 2 + b2:] / self.bins     # D in units of m: u - centre = dz / B
        cu = (np.arange(b2) + 0.5) / self.bins - 1.0             # bin centres in units of m

        def cum(a):
            return np.concatenate([np.zeros((len(a), 1)), np.cumsum(a, axis=1)], axis=1)

        fr = self.fractions()
        best = np.zeros(len(h), np.int64)
        for sg in (False, True):
            sel = np.flatnonzero(signed == sg)
            if not len(sel):
                continue
            bounds, cells, hi = self._cells(sg)
            c = cells[None, :] * (fr / hi)[:, None]                               # [K, cells], in units of m
            for i in range(0, len(sel), 32):
                rows = sel[i:i + 32]
                sn, s1, sc1, scn, sc2n = (np.diff(cum(a[rows])[:, bounds], axis=-1)   # [r, K, cells]
                                          for a in (n_, d1, cu * d1, cu * n_, cu * cu * n_))
                # per cell: sum over its values of (u - c)^2 - (u - centre)^2, with
                # u - c = (u - centre) + (centre - c); the dropped sum of (u - centre)^2 is the same
                # for every candidate
                err = (2 * (sc1 - c * s1) + (sc2n - 2 * c * scn + c * c * sn)).sum(axis=-1)
                best[rows] = self._best(err)
        return fr[best], m, signed

    # ---- in-graph form ----------------------------------------------------------------------------
    def graph_reduce(self, output, axes):
        ps = output.get_partial_shape()
        if ps.is_dynamic:
            return None
        shape = list(ps.to_shape())
        keep, axes, kept, n = self._layout(shape, axes)
        rows = int(np.prod(kept, dtype=np.int64)) if kept else 1
        b2, width = 2 * self.bins, 2 + 4 * self.bins
        if n <= self.exact_max or rows * width > self.max_graph_floats:
            return None
        self._kept = kept
        i64 = lambda v: ops.constant(np.array(v, np.int64))
        f32 = lambda v: ops.constant(np.array(v, np.float32))
        mn = ops.reshape(reduce_op("min", output, tuple(axes)), i64([rows, 1]), False)
        mx = ops.reshape(reduce_op("max", output, tuple(axes)), i64([rows, 1]), False)
        x = output
        if keep + axes != list(range(len(shape))):
            x = ops.transpose(x, i64(keep + axes))
        x = ops.reshape(x, i64([rows, n]), False)
        m = ops.maximum(mx, ops.negative(mn))
        bf = f32(self.bins)
        scale = ops.divide(bf, ops.select(ops.greater(m, f32(0)), m, f32(1)))
        z = ops.add(ops.multiply(x, scale), bf)
        jf = ops.clamp(ops.floor(z), 0.0, float(b2 - 1))
        dz = ops.subtract(ops.subtract(z, jf), f32(0.5))
        idx = ops.convert(jf, ov.Type.i32)
        zeros = ops.broadcast(f32(0), i64([rows, b2]))
        count = ops.scatter_elements_update(zeros, idx, ops.broadcast(f32(1), i64([rows, n])), i64(1),
                                            reduction="sum", use_init_val=True)
        dsum = ops.scatter_elements_update(zeros, idx, dz, i64(1), reduction="sum", use_init_val=True)
        out = ops.concat([mn, mx, count, dsum], 1)
        usage.count(f"{self.name}.planned")
        return ops.reshape(out, i64(kept + [width]), False).output(0)

    def from_graph(self, value):
        h = np.asarray(value, np.float64).reshape(-1, 2 + 4 * self.bins)
        f, m, signed = self.search_histogram(h)
        usage.count(f"{self.name}.graph", len(h))
        return self._value(f, m, signed).reshape(self._kept)


@lru_cache(maxsize=None)
def _cells(levels: tuple, bins: int, fractions: tuple) -> tuple:
    lo, hi = levels
    centres = (np.arange(2 * bins) + 0.5) / bins - 1.0
    r = np.arange(lo, hi + 2)
    bounds = np.stack([np.searchsorted(np.clip(np.rint(centres / (f / hi)), lo, hi), r, side="left")
                       for f in fractions])
    return bounds, np.arange(lo, hi + 1, dtype=np.float64), float(hi)


@attrs.define(kw_only=True, frozen=True)
class MSERangeW4Params(MSERangeParams):
    """``mse_range``'s params with the 4-bit grids as defaults."""

    signed_levels: tuple[int, int] = (-7, 7)
    unsigned_levels: tuple[int, int] = (0, 15)


class MSERangeW4Estimator(MSERangeEstimator):
    """``mse_range`` on a 4-bit grid: ``-7..7`` (step ``t/7``) for a slice with negative values,
    ``0..15`` for a non-negative one. For the weights of the ``CPU_W4A8`` target
    (``weights.range_estimator.max.type: "mse_range_w4"``).

    The same as ``{"type": "mse_range", "params": {"signed_levels": [-7, 7], "unsigned_levels": [0, 15]}}``
    (the config's estimator params); kept as a name of its own for configs written before those params.
    """

    name = "mse_range_w4"
    params_class = MSERangeW4Params
    signed_levels = MSERangeW4Params().signed_levels
    unsigned_levels = MSERangeW4Params().unsigned_levels
