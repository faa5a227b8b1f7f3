"""LayerwiseTuning: after MinMaxQuantization and FastBiasCorrection, tune the activation FakeQuantize
ranges, and the weight FakeQuantize scales, the weight rounding and the bias of every Convolution,
GroupConvolution and MatMul with quantized constant weights, so that what each quantizer and each layer
outputs on the calibration data moves as little as possible from the float values (numpy only).

``use_layerwise_tuning`` appends it to DefaultQuantization. It starts a new stage, so its statistics
come from the quantized model, in ONE more pass over the calibration data (the same
``stat_subset_size`` samples as the first stage). Every statistic is reduced per sample in graph to a
size that depends on the layer only, and averaged by the streaming ``mean`` aggregator, so memory does
not grow with the number of samples:

* ``input_gram``: ``H = E[x x^T]`` and ``m = E[x]`` of the vectors ``x`` a layer multiplies one output
  channel's weights with (MatMul: the input's last axis; convolution: the im2col patch of
  ``C/groups*kh*kw`` values, on a grid of at most :attr:`LayerwiseTuning.max_positions` output positions
  per sample); ``(D+1)(D+2)/2`` floats per layer and sample. A depthwise convolution gets one
  ``[kh*kw, kh*kw]`` tap-correlation matrix shared by its channels, and each channel's mean
  (:attr:`share_depthwise`).
* ``fq_mse``: for each per-tensor activation FakeQuantize, the mean squared quantization error of its
  input with the range scaled by each factor of :attr:`activation_factors`.

Then, in numpy:

1. **Activation ranges**: each per-tensor activation FakeQuantize takes the factor with the smallest
   mean squared error (1.0 keeps MinMax's range; the inputs of one Concat share one factor). MinMax's
   ranges average per-sample extremes, so they clip the tails of every sample above the average; a
   wider range trades that clipping error against a coarser step. Only widening is searched.
2. For a layer's output channel with float weights ``w`` (a row over the ``D`` inputs) and quantized
   weights ``q``, the mean squared output error is ``(w - q) H (w - q)^T``; when the layer has a bias
   (step 5 takes out the mean error) what is left is ``(w - q) S (w - q)^T`` with the covariance
   ``S = H - m m^T``, which steps 2 and 3 then use instead of ``H``. **Weight scales**: per output
   channel (per tensor for a per-tensor FakeQuantize) the range times each factor of
   :attr:`scale_factors` is tried and the factor whose nearest rounding has the smallest error is kept.
   Both borders scale together (the zero point stays on the grid) and the layer keeps the integer
   levels it used (a saturation-fixed layer its 7-bit grid).
3. **Rounding** (GPTQ, Frantar et al. 2022, Algorithm 1), with MinMax's scale and with the chosen one:
   quantize the columns one at a time in order and spread each column's rounding error over the
   columns not yet quantized through the upper Cholesky factor of ``(H + lambda I)^-1`` (``lambda`` =
   :attr:`damp` times the mean diagonal of ``H``; lazy batch updates of :attr:`block` columns). Rows are
   independent given ``H``, so each row keeps the best of the two results, or MinMax's rounding when
   that is better still.
4. The new weights are written as values on the (rescaled) FakeQuantize grid in place of the float
   weight constant, so the FakeQuantize reproduces them exactly and int8 compression gives the chosen
   integers; the four range inputs of the weight FakeQuantize are rescaled together.
5. **Bias** (closed form): for fixed weights the least-squares bias cancels the mean output error.
   Rounding moved the layer's mean output by ``(W_q,old - W_q,new) m``, which is added to the bias when
   the layer has a constant bias Add (FastBiasCorrection's correction stays).

The error a layer inherits from the quantized layers before it is not compensated: ``H`` comes from the
quantized model's inputs and the FP32 model's are not in the same pass.

Layers whose ``D`` exceeds :attr:`max_dim` are skipped: ``H`` costs ``D(D+1)/2`` floats per sample to
aggregate and ``D^3`` to factor. The default, 256, is a measured trade-off: on EfficientNet-Lite0 the
layers with larger ``D`` (1x1 convolutions from 320-1152 channels, the 1280-input classifier) took most
of the tuning time and did not lower the held-out error further; the first convolution (a 7-bit
saturation-fixed grid), the depthwise and the narrow 1x1 convolutions gave the gain. Layers with shared
or non-constant weights, without a weight FakeQuantize, or with weight ranges that are neither per
output channel nor per tensor are skipped too; the report lists every skipped layer and why.
"""
import contextlib
import ctypes
import time
from typing import Optional

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.graph import Graph
from ovquant.statistics import Statistic, TensorRef

from ..estimators.input_gram import unpack
from ovquant.quant_math import fake_quantize_value, weight_source

from .common import conv_geometry
from .layers import mean_output

TARGET_TYPES = ("Convolution", "GroupConvolution", "MatMul")


# ---- weights as rows -------------------------------------------------------------------------------
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


# ---- the quantization grid of a weight FakeQuantize ------------------------------------------------
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


def hessian_error(e: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``e_r H e_r^T`` for every row: ``e [G, R, D]``, ``h [G, D, D]`` -> ``[G, R]``."""
    return np.einsum("grd,grd->gr", _mm(e, h), e)


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stacked matrix product; one group goes to BLAS as a plain 2-D product (numpy's stacked loop is
    several times slower for large matrices)."""
    if a.shape[0] == 1 and b.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return np.matmul(a, b)


def cholesky(a: np.ndarray, nb: int = 64) -> np.ndarray:
    """Lower Cholesky factor of a stack of SPD matrices ``[G, n, n]``, blocked so that LAPACK only sees
    ``nb``-sized blocks and the work is matrix products (multi-threaded LAPACK factorizations of large
    matrices are slow and erratic on loaded machines)."""
    n = a.shape[-1]
    if n <= 2 * nb:
        return np.linalg.cholesky(a)
    lo = np.zeros_like(a)
    for k in range(0, n, nb):
        e = min(k + nb, n)
        lk = lo[:, k:e, :k]
        l11 = np.linalg.cholesky(a[:, k:e, k:e] - _mm(lk, _t(lk)))
        lo[:, k:e, k:e] = l11
        if e < n:
            a21 = a[:, e:, k:e] - _mm(lo[:, e:, :k], _t(lk))
            lo[:, e:, k:e] = _mm(a21, _t(np.linalg.inv(l11)))
    return lo


def lower_inverse(lo: np.ndarray, nb: int = 64) -> np.ndarray:
    """Inverse of a stack of lower-triangular matrices ``[G, n, n]`` (blocked, as :func:`cholesky`)."""
    n = lo.shape[-1]
    if n <= 2 * nb:
        return np.tril(np.linalg.inv(lo))
    x = np.zeros_like(lo)
    for k in range(0, n, nb):
        e = min(k + nb, n)
        xkk = np.tril(np.linalg.inv(lo[:, k:e, k:e]))
        x[:, k:e, k:e] = xkk
        if k:
            x[:, k:e, :k] = -_mm(xkk, _mm(lo[:, k:e, :k], x[:, :k, :k]))
    return x


def damped_inverse_cholesky(h: np.ndarray, damp: float) -> tuple:
    """Upper Cholesky factor ``U`` of ``(H + lambda I)^-1`` per group (``(H + lambda I)^-1 = U^T U``), as
    GPTQ uses it; inputs that are always zero (zero diagonal) get a unit diagonal. ``lambda`` is ``damp``
    times the mean diagonal, grown tenfold until the factorization succeeds. Returns ``(U, lambda)``.

    With ``J`` the reversal permutation and ``J (H + lambda I) J = L L^T``: ``U = J L^-1 J``."""
    h = np.array(h, np.float64)
    d = h.shape[-1]
    idx = np.arange(d)
    diag = h[:, idx, idx]
    dead = diag <= 0
    h[:, idx, idx] = np.where(dead, 1.0, diag)
    mean_diag = np.maximum(np.mean(np.where(dead, 1.0, diag), axis=-1), 1e-30)
    rev = h[:, ::-1, ::-1]
    for _ in range(8):
        lam = damp * mean_diag
        hd = rev.copy()
        hd[:, idx, idx] += lam[:, None]
        try:
            u = lower_inverse(cholesky(hd))[:, ::-1, ::-1]
            if np.all(np.isfinite(u)):
                return np.ascontiguousarray(u), lam
        except np.linalg.LinAlgError:
            pass
        damp = damp * 10 if damp > 0 else 1e-6
    raise np.linalg.LinAlgError("the Hessian is not positive definite even with strong dampening")


def gptq(w: np.ndarray, h: np.ndarray, quantize, damp: float = 0.01, block: int = 128) -> tuple:
    """GPTQ rounding (Frantar et al. 2022, Algorithm 1) of ``w [G, R, D]`` for ``H [G, D, D]``, batched over
    groups and rows. ``quantize(col, j)`` maps column ``j`` of the (error-updated) weights ``[G, R]`` to
    ``(levels, dequantized)``. Returns ``(levels [G, R, D], dequantized [G, R, D])``."""
    u, _ = damped_inverse_cholesky(h, damp)
    w = np.array(w, np.float64)
    g, r, d = w.shape
    q = np.empty_like(w)
    k = np.empty_like(w)
    for i1 in range(0, d, block):
        i2 = min(i1 + block, d)
        w1 = w[:, :, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[:, i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, :, i]
            kk, qq = quantize(col, i1 + i)
            k[:, :, i1 + i], q[:, :, i1 + i] = kk, qq
            err = (col - qq) / u1[:, i, i][:, None]
            w1[:, :, i:] -= err[:, :, None] * u1[:, None, i, i:]
            err1[:, :, i] = err
        if i2 < d:
            w[:, :, i2:] -= _mm(err1, u[:, i1:i2, i2:])
    return k, q


@contextlib.contextmanager
def single_threaded_blas():
    """Run numpy's OpenBLAS on one thread inside the block (restored afterwards): its multi-threaded
    factorizations and products are several times slower on a loaded machine, and one thread makes the
    results independent of the core count. Does nothing for other BLAS libraries."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
        for path in paths:
            lib = ctypes.CDLL(path)
            for prefix, suffix in (("scipy_openblas_", "64_"), ("openblas_", ""), ("openblas_", "64_")):
                get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    found.append((put, int(get())))
                    put(1)
                    break
    except OSError:
        pass
    try:
        yield
    finally:
        for put, n in found:
            put(n)


# ---- the algorithm ---------------------------------------------------------------------------------
class LayerwiseTuning(Algorithm):
    """Tunes activation FakeQuantize ranges (MSE grid search), and the weight FakeQuantize scales (grid
    search), weight rounding (GPTQ) and biases (closed form) of each Conv/GroupConv/MatMul layer, on the
    quantized model's calibration data (see the module)."""

    name = "LayerwiseTuning"
    new_stage = True

    #: layers whose H would be larger than this (D = C/groups*kh*kw, or the MatMul input size) are skipped
    max_dim = 256
    #: output positions per sample and layer used for H and m (a regular grid of them; None: all)
    max_positions = 16
    #: depthwise convolutions use one tap-correlation matrix for all channels (``input_gram`` shared=True)
    share_depthwise = True
    #: GPTQ dampening: this fraction of the mean diagonal of H is added to its diagonal
    damp = 0.01
    #: GPTQ lazy-batch width (columns)
    block = 128
    #: factors the weight ranges are scaled by in the weight scale search (1.0 keeps MinMax's range)
    scale_factors = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
    #: factors the activation ranges are scaled by in the activation range search (widening only: the
    #: tensor-wide squared error undervalues the few outlier channels a narrower range would clip, which
    #: cost a transformer (all-MiniLM-L6-v2) much of its accuracy)
    activation_factors = (1.0, 1.15, 1.3, 1.5, 1.75, 2.0)
    #: elements per sample used for an activation range search (spatially subsampled beyond)
    activation_max_elements = 8192
    #: a row takes new weights only when they lower its error by more than this fraction
    min_gain = 1e-6
    #: steps; switch one off to study the others
    tune_activations = True
    tune_scales = True
    tune_rounding = True
    tune_bias = True

    def __init__(self, params, context):
        super().__init__(params, context)
        self.layers: dict = {}
        self.activations: list = []
        self.skipped: list = []

    # ---- planning --------------------------------------------------------------------------------
    def _plan(self, graph: Graph, node: ov.Node, quantized: bool = True):
        """The statistics and row layout of a tunable layer, or a string saying why it is not tuned.
        ``quantized=False`` plans a layer whose weights are not quantized yet (the checks of the weight
        FakeQuantize are then left to :meth:`_check_quantized`)."""
        t = node.get_type_name()
        if quantized:
            why = self._check_quantized(node)
            if why:
                return why
        src = weight_source(node)
        if src is None:
            return "weights are not constant"
        if len(src.get_target_inputs()) != 1:
            return "weights are shared"
        wshape = src.get_partial_shape()
        x = node.input_value(0)
        xs = x.get_partial_shape()
        if not (wshape.is_static and xs.is_static):
            return "dynamic shapes"
        wshape = tuple(wshape.to_shape())
        rank = len(xs)
        if t == "MatMul":
            a = node.get_attributes()
            if a.get("transpose_a", False):
                return "MatMul with transpose_a"
            if len(wshape) < 2 or any(s != 1 for s in wshape[:-2]) or rank < 2:
                return "batched MatMul weights"
            layout = RowLayout(t, wshape, bool(a.get("transpose_b", False)))
            params: dict = {}
        else:
            geo = conv_geometry(node)
            if geo is None or len(wshape) != (4 if t == "Convolution" else 5):
                return "not a 2-D convolution"
            layout = RowLayout(t, wshape)
            params = {k: v for k, v in geo.items() if k != "input"}
            params["groups"] = int(wshape[0]) if t == "GroupConvolution" else 1
            if t == "GroupConvolution" and wshape[1] == 1 and wshape[2] == 1 and self.share_depthwise:
                params["shared"] = True
        if self.max_positions is not None:
            params["max_positions"] = int(self.max_positions)
        d = layout.rows_shape[2]
        if d > self.max_dim:
            return f"H would be {d}x{d} (max_dim {self.max_dim})"
        if quantized:
            fq = node.input_value(1).get_node()
            ranges = [Graph.constant_value(fq.input_value(i)).shape for i in range(1, 5)]
            if None in {layout.per_row(s) for s in ranges}:
                return "weight ranges are neither per output channel nor per tensor"
        ref = TensorRef(x.get_node().get_friendly_name(), x.get_index())
        return Statistic.make(ref, "input_gram", "mean", None, params), layout

    @staticmethod
    def _check_quantized(node: ov.Node) -> str:
        """Why the weight FakeQuantize of ``node`` cannot be tuned, or ""."""
        fq = node.input_value(1).get_node()
        if fq.get_type_name() != "FakeQuantize":
            return "weights not quantized"
        src = weight_source(node)
        if src is None:
            return "weights are not constant"
        if len(src.get_target_inputs()) != 1 or len(fq.output(0).get_target_inputs()) != 1:
            return "weights or their FakeQuantize are shared"
        if any(Graph.constant_value(fq.input_value(i)) is None for i in range(1, 5)):
            return "weight FakeQuantize ranges are not constant"
        return ""

    def _plan_activations(self, graph: Graph) -> list:
        """Activation FakeQuantize groups whose per-tensor range is searched: ``[(fqs, statistics)]``. The
        inputs of one Concat share a range (a unified scale), so they are searched together."""
        fqs = []
        for fq in graph.find(types="FakeQuantize"):
            src = fq.input_value(0)
            if Graph.constant_node(src) is not None or src.get_element_type() != ov.Type.f32:
                continue
            r = [Graph.constant_value(fq.input_value(i)) for i in range(1, 5)]
            if any(v is None or v.size != 1 for v in r) or not src.get_partial_shape().is_static:
                continue
            lo, hi, olo, ohi = (float(v.ravel()[0]) for v in r)
            if (lo, hi) != (olo, ohi) or not hi > lo:
                continue
            fqs.append(fq)
        groups: list = []
        index: dict = {}
        for fq in fqs:
            concat = [n for n in Graph.consumer_nodes(fq.output(0)) if n.get_type_name() == "Concat"]
            key = concat[0].get_friendly_name() if concat else fq.get_friendly_name()
            if key not in index:
                index[key] = len(groups)
                groups.append([])
            groups[index[key]].append(fq)
        out = []
        for members in groups:
            ranges = {tuple(float(Graph.constant_value(m.input_value(i)).ravel()[0]) for i in (1, 2)) for m in members}
            if len(ranges) != 1:
                continue   # not one shared range: leave them
            lo, hi = ranges.pop()
            stats = []
            for m in members:
                src = m.input_value(0)
                params = {"low": lo, "high": hi, "levels": int(m.get_attributes()["levels"]),
                          "factors": tuple(float(f) for f in self.activation_factors),
                          "max_elements": self.activation_max_elements}
                stats.append(Statistic.make(TensorRef(src.get_node().get_friendly_name(), src.get_index()),
                                            "fq_mse", "mean", None, params))
            out.append(([m.get_friendly_name() for m in members], stats))
        return out

    def statistics(self, graph: Graph):
        self.layers, self.activations, self.skipped = {}, [], []
        for node in graph.find(types=TARGET_TYPES):
            if Graph.constant_node(weight_source(node) or node.input_value(1)) is None:
                continue   # MatMul of two activations: nothing to tune
            plan = self._plan(graph, node)
            if isinstance(plan, str):
                self.skipped.append({"layer": node.get_friendly_name(), "type": node.get_type_name(), "reason": plan})
                continue
            self.layers[node.get_friendly_name()] = plan
            yield plan[0]
        if self.tune_activations and len(self.activation_factors) > 1:
            self.activations = self._plan_activations(graph)
            for _, stats in self.activations:
                yield from stats

    # ---- tuning ----------------------------------------------------------------------------------
    def apply(self, graph: Graph, stats) -> dict:
        t0 = time.perf_counter()
        acts = [self._tune_activation(graph, names, [np.asarray(stats[s], np.float64) for s in sts],
                                      [dict(s.estimator_params) for s in sts])
                for names, sts in self.activations]
        report = []
        with single_threaded_blas():
            for name, (st, layout) in self.layers.items():
                node = graph.node(name)
                shared = dict(st.estimator_params).get("shared", False)
                h, m = unpack(stats[st], layout.rows_shape[2] if shared else None)
                entry = self._tune(graph, node, layout, h, m)
                report.append({"layer": name, "type": node.get_type_name(), **entry})
        rel = [(e["relative_error_before"], e["relative_error_after"]) for e in report]
        last = getattr(getattr(self.context, "engine", None), "last_run", None) or {}
        return {"summary": f"tuned the rounding and scales of {len(report)} layer(s), {len(self.skipped)} skipped",
                "layers": report, "n_tuned": len(report), "skipped": self.skipped, "n_skipped": len(self.skipped),
                "activations": acts, "n_activation_ranges_changed": sum(a["factor"] != 1.0 for a in acts),
                "n_samples": int(last.get("n_samples", 0)),
                "mean_relative_error_before": round(float(np.mean([r[0] for r in rel])), 8) if rel else 0.0,
                "mean_relative_error_after": round(float(np.mean([r[1] for r in rel])), 8) if rel else 0.0,
                "tuning_seconds": round(time.perf_counter() - t0, 3)}

    def _tune_activation(self, graph: Graph, names: list, errors: list, params: list) -> dict:
        """Scale the range of a (group of) activation FakeQuantize(s) by the factor with the smallest mean
        squared quantization error (element-weighted over the group)."""
        factors = np.asarray(params[0]["factors"], np.float64)
        sizes = [float(np.prod(list(graph.node(n).input_value(0).get_shape())[1:])) for n in names]
        total = sum(s * e for s, e in zip(sizes, errors))
        one = int(np.argmin(np.abs(factors - 1.0)))
        best = int(np.argmin(total)) if np.all(np.isfinite(total)) else one
        if not total[best] < total[one]:
            best = one
        f = float(factors[best])
        if f != 1.0:
            for n in names:
                fq = graph.node(n)
                for i in range(1, 5):
                    v = Graph.constant_value(fq.input_value(i))
                    new = ops.constant(np.asarray(v * f, dtype=v.dtype))
                    new.set_friendly_name(fq.input_value(i).get_node().get_friendly_name())
                    fq.input(i).replace_source_output(new.output(0))
            graph.invalidate()
        return {"fake_quantize": names if len(names) > 1 else names[0], "factor": f,
                "mse_ratio": round(float(total[best] / total[one]) if total[one] > 0 else 1.0, 6)}

    def _tune(self, graph: Graph, node: ov.Node, layout: RowLayout, h: np.ndarray, m: Optional[np.ndarray]) -> dict:
        """Tune one layer. ``h``: ``E[x x^T]``, ``[G, D, D]`` or ``[1, D, D]`` shared by the groups; ``m``:
        ``E[x]``, ``[G, D]``, from the same positions."""
        fq = node.input_value(1).get_node()
        src = weight_source(node)
        w = Graph.constant_value(src).astype(np.float64)
        ranges = [Graph.constant_value(fq.input_value(i)).astype(np.float64) for i in range(1, 5)]
        per_row = all(layout.per_row(r.shape) for r in ranges)
        rows = [layout.to_rows(r)[..., 0] for r in ranges]            # [G, R] each
        levels = int(fq.get_attributes()["levels"])
        wr = layout.to_rows(w)                                        # [G, R, D]
        grid = RowGrid(*rows, levels, wr)
        gshape = wr.shape[:2]
        m = m.reshape(gshape[0], -1)
        bias = graph.bias_of(node) if self.tune_bias else None
        if bias is not None:
            # the bias takes out the mean output error, so what is left is the centred error: use the
            # covariance H - m m^T (shared: the mean over the groups of their covariances)
            mm = m[:, :, None] * m[:, None, :]
            h = h - (mm.mean(axis=0, keepdims=True) if h.shape[0] < mm.shape[0] else mm)
        q_old = layout.to_rows(fake_quantize_value(fq, w))
        err_old = hessian_error(wr - q_old, h)
        scale = float(np.sum(hessian_error(wr, h))) or 1.0

        def pick(err):
            return err if per_row else np.full(gshape, err.sum())

        # 1. scale search with nearest rounding
        candidates = [1.0]
        if self.tune_scales and len(self.scale_factors) > 1:
            errs = np.stack([pick(hessian_error(wr - grid.quantize(wr, np.full(gshape, f))[1], h))
                             for f in self.scale_factors])
            best = np.asarray(self.scale_factors, np.float64)[np.argmin(errs, axis=0)]
            candidates = [1.0] if np.all(best == 1.0) else [1.0, best]

        # 2. rounding with each candidate scale (1.0 and the search's choice); rows are independent given H,
        #    so each row keeps its best result, or MinMax's rounding when that is better still
        best_f, k_new, q_new, err_new = np.ones(gshape), None, None, np.full(gshape, np.inf)
        for f in candidates:
            f = np.broadcast_to(np.asarray(f, np.float64), gshape)
            if self.tune_rounding:
                def quantize_column(col, j, f=f):
                    k, q = grid.quantize(col[..., None], f)
                    return k[..., 0], q[..., 0]

                k, q = gptq(wr, h, quantize_column, self.damp, self.block)
            else:
                k, q = grid.quantize(wr, f)
            e = pick(hessian_error(wr - q, h))
            better = e < err_new
            if k_new is None:
                k_new, q_new = k, q
            k_new = np.where(better[..., None], k, k_new)
            q_new = np.where(better[..., None], q, q_new)
            best_f = np.where(better, f, best_f)
            err_new = np.where(better, e, err_new)
        take = err_new < pick(err_old) * (1.0 - self.min_gain)
        err_new = hessian_error(wr - q_new, h)
        f_used = np.where(take, best_f, 1.0)
        err_final = np.where(take, err_new, err_old)
        d = h.shape[-1]
        hname = f"{d}x{d}" if h.shape[0] == 1 else f"{h.shape[0]}x{d}x{d}"
        entry = {"rows": int(np.prod(gshape)), "hessian": hname + (" shared" if h.shape[0] < gshape[0] else ""),
                 "rows_tuned": int(take.sum()),
                 "error_before": float(err_old.sum()), "error_after": float(err_final.sum()),
                 "relative_error_before": round(float(err_old.sum()) / scale, 8),
                 "relative_error_after": round(float(err_final.sum()) / scale, 8),
                 "rows_rescaled": int((f_used != 1.0).sum()), "scale_factor_mean": round(float(f_used.mean()), 4),
                 "bias_shift": 0.0}
        if not take.any():
            return entry

        # 3. write the new weights (on the grid) and ranges
        # rows kept as they were are written on the grid too (their levels as the FakeQuantize rounds them)
        ones = np.ones(gshape)
        w_in = np.where(take[..., None], grid.value_in(k_new, best_f),
                        grid.value_in(grid.levels_of(wr, ones), ones))
        graph.set_constant(src, layout.from_rows(w_in).astype(np.float32))
        if np.any(f_used != 1.0):
            for i, r in enumerate(ranges, start=1):
                f = layout.to_range(f_used, r.shape) if per_row else np.float64(f_used.flat[0])
                new = ops.constant(np.asarray(r * f, dtype=fq.input_value(i).get_element_type().to_dtype()))
                new.set_friendly_name(fq.input_value(i).get_node().get_friendly_name())
                fq.input(i).replace_source_output(new.output(0))
            graph.invalidate()
        q_final = np.where(take[..., None], q_new, q_old)

        # 4. bias: cancel the change of the mean output
        if bias is not None:
            add, port = bias
            b_out = add.input_value(port)
            b = Graph.constant_value(b_out).astype(np.float64)
            s = m.reshape(-1) if node.get_type_name() == "MatMul" else m.reshape((-1,) + layout.shape[-2:])
            delta = mean_output(node, layout.from_rows(q_old - q_final), s)
            if np.all(np.isfinite(delta)):
                graph.set_constant(b_out, (b.reshape(-1) + delta).reshape(b.shape).astype(np.float32))
                entry["bias_shift"] = round(float(np.max(np.abs(delta))) if delta.size else 0.0, 8)
        return entry


@hookimpl
def register_algorithms(register):
    register(LayerwiseTuning)
