"""Built-in estimator ``input_gram``: the second moment (Gram matrix) of what a Convolution or MatMul
multiplies its weights with, and the mean of it, per sample. Layer-wise tuning (GPTQ-style rounding
and the closed-form bias) needs nothing else from the calibration data."""
import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.statistics import Estimator


def triu_index(n: int) -> np.ndarray:
    """Flat indices (row-major, into an ``[n, n]`` matrix) of the upper triangle, diagonal included."""
    r, c = np.triu_indices(n)
    return (r * n + c).astype(np.int64)


def unpack(value: np.ndarray) -> tuple:
    """``(H, m)`` from a (possibly aggregated) packed value ``[..., G, T]``: ``H [..., G, D, D]`` the
    symmetric Gram matrix ``E[x x^T]`` and ``m [..., G, D]`` the mean ``E[x]`` (float64)."""
    value = np.asarray(value, np.float64)
    t = value.shape[-1]
    n = int(round((np.sqrt(8 * t + 1) - 1) / 2))
    if n * (n + 1) // 2 != t:
        raise ValueError(f"input_gram: {t} is not a triangular number")
    full = np.zeros(value.shape[:-1] + (n * n,))
    full[..., triu_index(n)] = value
    full = full.reshape(value.shape[:-1] + (n, n))
    diag = np.diagonal(full, axis1=-2, axis2=-1).copy()
    full = full + np.swapaxes(full, -1, -2)
    idx = np.arange(n)
    full[..., idx, idx] = diag
    return full[..., :-1, :-1], full[..., :-1, -1]


class InputGramEstimator(Estimator):
    """Per sample, the mean over positions of ``v v^T`` with ``v = [x; 1]`` the vector a layer multiplies
    with one output channel's weights at one output position, augmented with a constant 1:

    * ``kernel=None`` (MatMul): ``x`` is the last axis of the input; every other non-batch axis is a
      position. ``G = 1`` group, ``D`` = last-axis size.
    * a 2-D (group) convolution with ``kernel=(kh, kw)``, ``strides``, ``dilations``, ``pads_begin``,
      ``output=(oh, ow)`` and ``groups``: ``x`` is the im2col patch of a group at one output position,
      ordered (channel, kernel row, kernel column) like the weights ``[.., C/groups, kh, kw]``; zero
      padding counts as zeros. ``D = C/groups*kh*kw``, one matrix per group (a depthwise convolution
      gets one small ``[kh*kw, kh*kw]`` matrix per channel).

    Value per sample: ``[G, T]``, the upper triangle (row-major, diagonal included) of the symmetric
    ``[D+1, D+1]`` matrix, ``T = (D+1)(D+2)/2``; :func:`unpack` turns it into ``H = E[x x^T]`` and
    ``m = E[x]`` (the last row of the augmented matrix: for a convolution the window mean of every
    kernel tap, what ``window_mean`` gives). The size depends on the layer only, not on the number of
    positions or samples, so a ``mean`` aggregator keeps the memory of a calibration pass bounded.

    In graph: the patches are strided slices of the zero-padded input, stacked along a new axis; one
    (batched) MatMul forms the Gram matrix and a Gather keeps its upper triangle.
    """

    name = "input_gram"

    def __init__(self, side="max", outlier_prob=1e-4, kernel=None, strides=(1, 1), dilations=(1, 1),
                 pads_begin=(0, 0), output=(1, 1), groups=1):
        super().__init__(side, outlier_prob)
        self.kernel = None if kernel is None else tuple(kernel)
        self.strides, self.dilations = tuple(strides), tuple(dilations)
        self.pads_begin, self.output, self.groups = tuple(pads_begin), tuple(output), int(groups)

    def key(self):
        return (self.name, self.kernel, self.strides, self.dilations, self.pads_begin, self.output, self.groups)

    # ---- geometry -------------------------------------------------------------------------------
    def _pads_end(self, h: int, w: int) -> tuple:
        """Zero rows/columns needed after the input so that every tap of every output position is inside."""
        need = [(self.output[a] - 1) * self.strides[a] + (self.kernel[a] - 1) * self.dilations[a] + 1
                for a in (0, 1)]
        return tuple(max(0, need[a] - self.pads_begin[a] - size) for a, size in enumerate((h, w)))

    def dim(self, input_shape) -> int:
        """``D`` for an input of ``input_shape`` (batch first)."""
        if self.kernel is None:
            return int(input_shape[-1])
        return int(input_shape[1]) // self.groups * self.kernel[0] * self.kernel[1]

    # ---- numpy form -----------------------------------------------------------------------------
    def _vectors(self, x: np.ndarray) -> np.ndarray:
        """[B, G, P, D]: the vectors of every position of every sample."""
        if self.kernel is None:
            return x.reshape(x.shape[0], 1, -1, x.shape[-1])
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        (ph, pw), (oh, ow) = self.pads_begin, self.output
        eh, ew = self._pads_end(h, w)
        xp = np.zeros((b, c, ph + h + eh, pw + w + ew), x.dtype)
        xp[:, :, ph:ph + h, pw:pw + w] = x
        taps = [xp[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
                for i in range(kh) for j in range(kw)]
        p = np.stack(taps, axis=2)                                    # [b, c, k2, oh, ow]
        g = self.groups
        p = p.reshape(b, g, (c // g) * kh * kw, oh * ow)              # (channel, tap) order
        return np.swapaxes(p, 2, 3)

    def reduce(self, x, axes):
        x = np.asarray(x, np.float64)
        x = np.where(np.isfinite(x), x, 0.0)
        v = self._vectors(x)
        v = np.concatenate([v, np.ones(v.shape[:-1] + (1,))], axis=-1)   # [B, G, P, D+1]
        gram = np.einsum("bgpd,bgpe->bgde", v, v) / v.shape[2]
        n = gram.shape[-1]
        return gram.reshape(gram.shape[:2] + (n * n,))[..., triu_index(n)].astype(np.float32)

    # ---- in-graph form --------------------------------------------------------------------------
    def graph_reduce(self, output, axes):
        shape = [int(s) for s in output.get_shape()]
        i64 = lambda v: ops.constant(np.array(v, np.int64))
        b = shape[0]
        if self.kernel is None:
            k = shape[-1]
            p = int(np.prod(shape[1:-1], dtype=np.int64)) if len(shape) > 1 else 1
            x = ops.reshape(output, i64([b, 1, p, k]), False)                    # [B, 1, P, D]
            ones = ops.constant(np.ones((b, 1, p, 1), np.float32))
            v = ops.concat([x, ones], 3)                                        # [B, 1, P, D+1]
            gram = ops.matmul(v, v, True, False)                               # [B, 1, D+1, D+1]
        else:
            if len(shape) != 4:
                return None
            _, c, h, w = shape
            (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
            (ph, pw), (oh, ow) = self.pads_begin, self.output
            eh, ew = self._pads_end(h, w)
            x = output
            if ph or pw or eh or ew:
                x = ops.pad(x, i64([0, 0, ph, pw]), i64([0, 0, eh, ew]), "constant",
                            ops.constant(np.float32(0))).output(0)
            taps = []
            for i in range(kh):
                for j in range(kw):
                    if kh == kw == 1 and sh == sw == 1 and (eh, ew) == (0, 0):
                        t = x
                    else:
                        t = ops.strided_slice(x, i64([0, 0, i * dh, j * dw]),
                                              i64([b, c, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1]),
                                              i64([1, 1, sh, sw]), [0] * 4, [0] * 4)
                    taps.append(ops.unsqueeze(t, i64([2])))
            pt = taps[0] if len(taps) == 1 else ops.concat(taps, 2)             # [B, C, k2, oh, ow]
            g = self.groups
            d = (c // g) * kh * kw
            v = ops.reshape(pt, i64([b, g, d, oh * ow]), False)
            ones = ops.constant(np.ones((b, g, 1, oh * ow), np.float32))
            v = ops.concat([v, ones], 2)                                        # [B, G, D+1, P]
            gram = ops.matmul(v, v, False, True)                               # [B, G, D+1, D+1]
            p = oh * ow
        n = self.dim(shape) + 1
        gram = ops.multiply(gram, ops.constant(np.float32(1.0 / p)))
        g = 1 if self.kernel is None else self.groups
        flat = ops.reshape(gram, i64([b, g, n * n]), False)
        return ops.gather(flat, ops.constant(triu_index(n)), i64(2)).output(0)


@hookimpl
def register_estimators(register):
    register(InputGramEstimator)
