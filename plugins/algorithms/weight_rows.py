"""A layer's weights as rows, the grid of its weight FakeQuantize per row, and the tuning problem they
make with ``H`` (not a plugin): what LayerwiseTuning and FirstLayerRounding tune. A row is one output
channel's weights over the ``D`` inputs it multiplies, in the order the ``input_gram`` estimator lays out
those inputs."""
from typing import Optional

import numpy as np
import openvino as ov

from ovquant.graph import Graph
from ovquant.quant_math import fake_quantize_value, weight_source

from .gptq import hessian_error


class RowLayout:
    """How a layer's weight tensor maps to ``[G, R, D]``: G groups (each with its own ``H``), R output
    channels per group, D inputs per output channel, in the order ``input_gram`` uses."""

    def __init__(self, kind: str, shape: tuple, transpose_b: bool = False):
        self.kind, self.shape, self.transpose_b = kind, tuple(shape), transpose_b
        n = len(shape)
        if kind == "Convolution":
            self.rows_shape = (1, shape[0], int(np.prod(shape[1:])))
            self.row_axes = (0,)
        elif kind == "GroupConvolution":
            self.rows_shape = (shape[0], shape[1], int(np.prod(shape[2:])))
            self.row_axes = (0, 1)
        else:
            k, o = (shape[-1], shape[-2]) if transpose_b else (shape[-2], shape[-1])
            self.rows_shape = (1, o, k)
            self.row_axes = (n - 2,) if transpose_b else (n - 1,)

    def to_rows(self, a: np.ndarray) -> np.ndarray:
        a = np.broadcast_to(a, self.shape)
        if self.kind == "MatMul":
            a2 = a.reshape(self.shape[-2:])
            return np.ascontiguousarray(a2 if self.transpose_b else a2.T).reshape(self.rows_shape)
        return np.ascontiguousarray(a).reshape(self.rows_shape)

    def from_rows(self, r: np.ndarray) -> np.ndarray:
        if self.kind == "MatMul":
            r2 = r.reshape(self.rows_shape[1:])
            return np.ascontiguousarray(r2 if self.transpose_b else r2.T).reshape(self.shape)
        return r.reshape(self.shape)

    def per_row(self, range_shape: tuple) -> Optional[bool]:
        """True: a range constant of this shape has one value per output channel; False: one per
        tensor; None: it varies within an output channel's row (not supported)."""
        rs = (1,) * (len(self.shape) - len(range_shape)) + tuple(range_shape)
        if any(rs[a] != 1 for a in range(len(self.shape)) if a not in self.row_axes):
            return None
        if all(rs[a] == self.shape[a] for a in self.row_axes):
            return True
        if all(rs[a] == 1 for a in self.row_axes):
            return False
        return None

    def to_range(self, per_row_values: np.ndarray, range_shape: tuple) -> np.ndarray:
        """Per-row values ``[G, R]`` in the shape of a per-row range constant."""
        full = self.from_rows(np.broadcast_to(per_row_values[..., None], self.rows_shape))
        rs = (1,) * (len(self.shape) - len(range_shape)) + tuple(range_shape)
        idx = tuple(slice(None) if rs[a] != 1 else slice(0, 1) for a in range(len(self.shape)))
        return np.ascontiguousarray(full[idx]).reshape(range_shape)


class RowGrid:
    """The grid of a weight FakeQuantize, per row ``[G, R]``: input borders ``il, ih``, output borders
    ``ol, oh``, ``levels``, and the integer levels ``[kmin, kmax]`` the layer may use."""

    def __init__(self, il, ih, ol, oh, levels: int, w_rows: np.ndarray):
        self.il, self.ih, self.ol, self.oh = (np.asarray(v, np.float64) for v in (il, ih, ol, oh))
        self.levels = int(levels)
        n = self.levels - 1
        self.step_in = (self.ih - self.il) / n
        self.step_out = (self.oh - self.ol) / n
        # the levels in use: a symmetric band around the zero point, as wide as the widest used by
        # the weights as MinMax quantized them (127 levels; 63 with the saturation fix)
        zp = np.round(-self.il / self.step_in)
        k0 = self.levels_of(w_rows, np.ones_like(self.il))
        band = float(np.max(np.abs(k0 - zp[..., None]))) if k0.size else n
        self.kmin = np.clip(zp - band, 0, n)[..., None]
        self.kmax = np.clip(zp + band, 0, n)[..., None]

    def levels_of(self, w: np.ndarray, f: np.ndarray, kmin=None, kmax=None) -> np.ndarray:
        """Nearest integer levels of ``w [G, R, ...]`` with the range scaled by ``f [G, R]``."""
        f = f[..., None] if np.ndim(f) else f
        k = np.round((w - self.il[..., None] * f) / (self.step_in[..., None] * f))
        lo = 0 if kmin is None else kmin
        hi = self.levels - 1 if kmax is None else kmax
        return np.clip(k, lo, hi)

    def quantize(self, w: np.ndarray, f: np.ndarray) -> tuple:
        """(levels, dequantized values) of ``w [G, R, D]`` with the range scaled by ``f [G, R]``."""
        k = self.levels_of(w, f, self.kmin, self.kmax)
        return k, self.value_out(k, f)

    def value_out(self, k, f):
        f = f[..., None]
        return self.ol[..., None] * f + k * self.step_out[..., None] * f

    def value_in(self, k, f):
        """What to store in the float weight constant so that the FakeQuantize gives level ``k``."""
        f = f[..., None]
        return self.il[..., None] * f + k * self.step_in[..., None] * f


class TuningProblem:
    """One layer's tuning problem: its weights as rows ``wr [G, R, D]``, the grid of its weight
    FakeQuantize, ``H`` (the covariance ``H - m m^T`` when the layer has a bias to take out the mean
    error; shared: the mean over the groups of their covariances) and MinMax's rounding and its error."""

    def __init__(self, graph: Graph, node: ov.Node, layout: RowLayout, h: np.ndarray, m: np.ndarray,
                 tune_bias: bool):
        self.layout = layout
        self.fq = node.input_value(1).get_node()
        self.src = weight_source(node)
        w = Graph.constant_value(self.src).astype(np.float64)
        self.ranges = [Graph.constant_value(self.fq.input_value(i)).astype(np.float64) for i in range(1, 5)]
        self.per_row = all(layout.per_row(r.shape) for r in self.ranges)
        rows = [layout.to_rows(r)[..., 0] for r in self.ranges]            # [G, R] each
        self.wr = layout.to_rows(w)                                        # [G, R, D]
        self.grid = RowGrid(*rows, int(self.fq.get_attributes()["levels"]), self.wr)
        self.gshape = self.wr.shape[:2]
        self.m = m.reshape(self.gshape[0], -1)
        self.bias = graph.bias_of(node) if tune_bias else None
        if self.bias is not None:
            mm = self.m[:, :, None] * self.m[:, None, :]
            h = h - (mm.mean(axis=0, keepdims=True) if h.shape[0] < mm.shape[0] else mm)
        self.h = h
        self.q_old = layout.to_rows(fake_quantize_value(self.fq, w))
        self.err_old = hessian_error(self.wr - self.q_old, h)
        self.scale = float(np.sum(hessian_error(self.wr, h))) or 1.0

    def pick(self, err: np.ndarray) -> np.ndarray:
        """Per-row errors, or for a per-tensor FakeQuantize their sum on every row (one choice)."""
        return err if self.per_row else np.full(self.gshape, err.sum())

    def entry(self, take, f_used, err_final) -> dict:
        d, g = self.h.shape[-1], self.h.shape[0]
        hname = f"{d}x{d}" if g == 1 else f"{g}x{d}x{d}"
        return {"rows": int(np.prod(self.gshape)), "hessian": hname + (" shared" if g < self.gshape[0] else ""),
                "rows_tuned": int(take.sum()),
                "error_before": float(self.err_old.sum()), "error_after": float(err_final.sum()),
                "relative_error_before": round(float(self.err_old.sum()) / self.scale, 8),
                "relative_error_after": round(float(err_final.sum()) / self.scale, 8),
                "rows_rescaled": int((f_used != 1.0).sum()), "scale_factor_mean": round(float(f_used.mean()), 4),
                "bias_shift": 0.0}
