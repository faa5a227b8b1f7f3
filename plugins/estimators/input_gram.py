"""Built-in estimator ``input_gram``: per sample, the second moment (Gram matrix) and the mean of what a
Convolution or MatMul multiplies its weights with. GPTQ-style rounding in layer-wise tuning needs them as
the Hessian of the layer's output error, and the closed-form bias needs the mean."""
import math

import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.statistics import Estimator


def triu_index(n: int) -> np.ndarray:
    """Flat indices (row-major, into an ``[n, n]`` matrix) of the upper triangle, diagonal included."""
    r, c = np.triu_indices(n)
    return (r * n + c).astype(np.int64)


def unpack(value: np.ndarray, shared_dim=None) -> tuple:
    """``(H, m)`` (float64) from a (possibly aggregated) value ``[..., G, V]`` of ``input_gram``: ``H
    [..., G, D, D]`` the Gram matrices and ``m [..., G, D]`` the mean vectors. ``shared_dim`` is ``D`` of a
    ``shared=True`` value (one group); its ``m`` is then ``[..., C, D]``, one mean vector per channel."""
    value = np.asarray(value, np.float64)
    if shared_dim is not None:
        d = int(shared_dim)
        t = d * (d + 1) // 2
        return _symmetric(value[..., :t], d), value[..., 0, t:].reshape(value.shape[:-2] + (-1, d))
    t = value.shape[-1]
    n = int(round((math.sqrt(8 * t + 1) - 1) / 2))
    if n * (n + 1) // 2 != t:
        raise ValueError(f"input_gram: {t} is not a triangular number")
    full = _symmetric(value, n)
    return full[..., :-1, :-1], full[..., :-1, -1]


def _symmetric(tri: np.ndarray, n: int) -> np.ndarray:
    full = np.zeros(tri.shape[:-1] + (n * n,))
    full[..., triu_index(n)] = tri
    full = full.reshape(tri.shape[:-1] + (n, n))
    diag = np.diagonal(full, axis1=-2, axis2=-1).copy()
    full = full + np.swapaxes(full, -1, -2)
    idx = np.arange(n)
    full[..., idx, idx] = diag
    return full


def _grid(n: int, cap: int) -> tuple:
    """(first, step, count): a regular, centred subset of ``range(n)`` with at most ``cap`` items."""
    step = max(1, math.ceil(n / cap))
    count = math.ceil(n / step)
    return (n - 1 - (count - 1) * step) // 2, step, count


class InputGramEstimator(Estimator):
    """Per sample, the mean over positions of ``v v^T`` with ``v = [x; 1]``: ``x`` is the vector a layer
    multiplies with one output channel's weights at one output position, so the value holds both the
    Gram matrix ``H = mean x x^T`` and the mean ``m = mean x`` (the last row), from the same positions:

    * ``kernel=None`` (MatMul): ``x`` is the last axis of the input; every other non-batch index is a
      position. One group, ``D`` = last-axis size.
    * a 2-D (group) convolution with ``kernel=(kh, kw)``, ``strides``, ``dilations``, ``pads_begin``,
      ``output=(oh, ow)`` and ``groups``: ``x`` is the im2col patch of a group at one output position,
      ordered (channel, kernel row, kernel column) like the weights ``[.., C/groups, kh, kw]``; zero
      padding counts as zeros. ``D = C/groups*kh*kw``, one matrix per group.

    Value per sample: ``[G, T]``, the upper triangle (row-major, diagonal included) of each symmetric
    ``[D+1, D+1]`` matrix, ``T = (D+1)(D+2)/2``; :func:`unpack` gives ``H`` and ``m``. Its size depends on
    the layer only, not on the number of positions or samples, so with a ``mean`` aggregator the memory
    of a calibration pass does not grow with the number of samples.

    ``shared=True`` (depthwise convolutions: ``groups`` = channels, ``D = kh*kw``) gives ONE Gram matrix,
    the mean over the channels of theirs (the correlation of the kernel taps, shared by the channels),
    and each channel's mean vector: ``D(D+1)/2 + C*D`` floats instead of ``C*(D+1)(D+2)/2``; in graph one
    matrix product over all channels replaces ``C`` small ones.

    ``max_positions`` (default: all) caps the positions used per sample: a regular grid of output
    positions, centred (convolution: the same step along both axes), so that the cost of a layer with
    a large output does not grow with its area.

    In graph: the patches come from ExtractImagePatches on the zero-padded input; one (batched) MatMul
    forms the Gram matrices and a Gather keeps their upper triangles.
    """

    name = "input_gram"
    range_estimator = False   # requested by algorithms, not named in a config

    def __init__(self, side="max", outlier_prob=1e-4, kernel=None, strides=(1, 1), dilations=(1, 1),
                 pads_begin=(0, 0), output=(1, 1), groups=1, max_positions=None, shared=False):
        super().__init__(side, outlier_prob)
        self.kernel = None if kernel is None else tuple(kernel)
        self.strides, self.dilations = tuple(strides), tuple(dilations)
        self.pads_begin, self.output, self.groups = tuple(pads_begin), tuple(output), int(groups)
        self.max_positions = None if max_positions is None else int(max_positions)
        self.shared = bool(shared)
        if self.shared and self.kernel is None:
            raise ValueError("input_gram: shared=True needs a (depthwise) convolution kernel")

    def key(self):
        return (self.name, self.kernel, self.strides, self.dilations, self.pads_begin, self.output, self.groups,
                self.max_positions, self.shared)

    # ---- geometry -------------------------------------------------------------------------------
    def dim(self, input_shape) -> int:
        """``D`` for an input of ``input_shape`` (batch first)."""
        if self.kernel is None:
            return int(input_shape[-1])
        return int(input_shape[1]) // self.groups * self.kernel[0] * self.kernel[1]

    def _conv_plan(self, h: int, w: int) -> tuple:
        """Per axis ``(first output position, step, count)``, and the zero padding (begin, end) per axis."""
        oh, ow = self.output
        cap = self.max_positions
        step = 1 if cap is None else max(1, math.ceil(math.sqrt(oh * ow / cap)))
        while cap is not None and math.ceil(oh / step) * math.ceil(ow / step) > cap:
            step += 1
        axes = []
        for n in (oh, ow):
            count = math.ceil(n / step)
            axes.append(((n - 1 - (count - 1) * step) // 2, step, count))
        pads = []
        for a, size in enumerate((h, w)):
            first, st, count = axes[a]
            last = (first + (count - 1) * st) * self.strides[a] + (self.kernel[a] - 1) * self.dilations[a]
            pads.append((self.pads_begin[a], max(0, last + 1 - self.pads_begin[a] - size)))
        return axes, pads

    def _tap_slices(self, h: int, w: int):
        """(pads, [(begin, end, step) per axis] for every tap (i, j) in order)."""
        axes, pads = self._conv_plan(h, w)
        out = []
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                sl = []
                for a, t in enumerate((i, j)):
                    first, st, count = axes[a]
                    b = first * self.strides[a] + t * self.dilations[a]
                    step = st * self.strides[a]
                    sl.append((b, b + (count - 1) * step + 1, step))
                out.append(sl)
        return pads, out, axes[0][2] * axes[1][2]

    # ---- numpy form -----------------------------------------------------------------------------
    def _vectors(self, x: np.ndarray) -> np.ndarray:
        """[B, G, P, D]: the vectors of the positions used, for every sample."""
        if self.kernel is None:
            v = x.reshape(x.shape[0], -1, x.shape[-1])
            if self.max_positions is not None:
                first, step, count = _grid(v.shape[1], self.max_positions)
                v = v[:, first:first + (count - 1) * step + 1:step]
            return v[:, None]
        b, c, h, w = x.shape
        (ph, eh), (pw, ew) = self._conv_plan(h, w)[1]
        xp = np.zeros((b, c, ph + h + eh, pw + w + ew), x.dtype)
        xp[:, :, ph:ph + h, pw:pw + w] = x
        _, taps, p = self._tap_slices(h, w)
        t = np.stack([xp[:, :, r0:r1:rs, c0:c1:cs] for (r0, r1, rs), (c0, c1, cs) in taps], axis=2)
        g = self.groups
        t = t.reshape(b, g, (c // g) * len(taps), p)              # (channel, tap) order
        return np.swapaxes(t, 2, 3)

    def reduce(self, x, axes):
        x = np.asarray(x, np.float64)
        v = self._vectors(np.where(np.isfinite(x), x, 0.0))                       # [B, G, P, D]
        if self.shared:
            if x.shape[1] != self.groups:
                raise ValueError("input_gram: shared=True is for depthwise convolutions (one channel per group)")
            d = v.shape[3]
            gram = np.einsum("bgpd,bgpe->bde", v, v) / (v.shape[1] * v.shape[2])
            means = v.mean(axis=2).reshape(v.shape[0], 1, -1)                   # [B, 1, C*D]
            tri = gram.reshape(gram.shape[0], 1, d * d)[..., triu_index(d)]
            return np.concatenate([tri, means], axis=-1).astype(np.float32)
        v = np.concatenate([v, np.ones(v.shape[:-1] + (1,))], axis=-1)
        gram = np.einsum("bgpd,bgpe->bgde", v, v) / v.shape[2]
        n = gram.shape[-1]
        return gram.reshape(gram.shape[:2] + (n * n,))[..., triu_index(n)].astype(np.float32)

    # ---- in-graph form --------------------------------------------------------------------------
    def graph_reduce(self, output, axes):
        shape = [int(s) for s in output.get_shape()]
        i64 = lambda v: ops.constant(np.array(v, np.int64))
        b = shape[0]
        if self.kernel is None:
            if len(shape) < 2:
                return None
            k = shape[-1]
            p = int(np.prod(shape[1:-1], dtype=np.int64))
            v = ops.reshape(output, i64([b, p, k]), False)
            if self.max_positions is not None and p > self.max_positions:
                first, step, count = _grid(p, self.max_positions)
                v = ops.strided_slice(v, i64([0, first, 0]), i64([b, first + (count - 1) * step + 1, k]),
                                      i64([1, step, 1]), [0] * 3, [0] * 3)
                p = count
            v = ops.concat([ops.reshape(v, i64([b, 1, p, k]), False),
                            ops.constant(np.ones((b, 1, p, 1), np.float32))], 3)   # [B, 1, P, D+1]
            gram = ops.matmul(v, v, True, False)                                # [B, 1, D+1, D+1]
            g = 1
        else:
            if len(shape) != 4:
                return None
            _, c, h, w = shape
            (pads, taps, p) = self._tap_slices(h, w)
            (ph, eh), (pw, ew) = pads
            x = output
            if ph or pw or eh or ew:
                x = ops.pad(x, i64([0, 0, ph, pw]), i64([0, 0, eh, ew]), "constant",
                            ops.constant(np.float32(0))).output(0)
            (fh, sth, nh), (fw, stw, nw) = self._conv_plan(h, w)[0]
            (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
            begin = [fh * sh, fw * sw]
            end = [begin[0] + (nh - 1) * sth * sh + (kh - 1) * dh + 1,
                   begin[1] + (nw - 1) * stw * sw + (kw - 1) * dw + 1]
            if begin != [0, 0] or end != [h + ph + eh, w + pw + ew]:
                x = ops.strided_slice(x, i64([0, 0] + begin), i64([b, c] + end), i64([1, 1, 1, 1]),
                                      [0] * 4, [0] * 4).output(0)
            k2 = kh * kw
            if (kh, kw, sth * sh, stw * sw) != (1, 1, 1, 1):
                # patches [B, k2*C, nh, nw], depth ordered (tap, channel)
                x = ops.extract_image_patches(x, [kh, kw], [sth * sh, stw * sw], [dh, dw], "valid").output(0)
            if self.shared:
                if c != self.groups:
                    return None
                v = ops.reshape(x, i64([b, 1, k2, c * p]), False)
                gram = ops.multiply(ops.matmul(v, v, False, True), ops.constant(np.float32(1.0 / (c * p))))
                tri = ops.gather(ops.reshape(gram, i64([b, 1, k2 * k2]), False), ops.constant(triu_index(k2)),
                                 i64(2))
                means = ops.reduce_mean(ops.reshape(x, i64([b, k2, c, p]), False), i64([3]), False)   # [B, k2, C]
                means = ops.reshape(ops.transpose(means, i64([0, 2, 1])), i64([b, 1, c * k2]), False)
                return ops.concat([tri, means], 2).output(0)
            if k2 > 1:   # (tap, channel) -> (channel, tap)
                x = ops.transpose(ops.reshape(x, i64([b, k2, c, p]), False), i64([0, 2, 1, 3])).output(0)
            g = self.groups
            v = ops.reshape(x, i64([b, g, (c // g) * len(taps), p]), False)
            v = ops.concat([v, ops.constant(np.ones((b, g, 1, p), np.float32))], 2)   # [B, G, D+1, P]
            gram = ops.matmul(v, v, False, True)                               # [B, G, D+1, D+1]
        n = self.dim(shape) + 1
        gram = ops.multiply(gram, ops.constant(np.float32(1.0 / p)))
        flat = ops.reshape(gram, i64([b, g, n * n]), False)
        return ops.gather(flat, ops.constant(triu_index(n)), i64(2)).output(0)


@hookimpl
def register_estimators(register):
    register(InputGramEstimator)
