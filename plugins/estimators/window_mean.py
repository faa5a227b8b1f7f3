"""Built-in estimator ``window_mean``: the mean input seen by each tap of a convolution kernel."""
import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.statistics import Estimator


def _taps(size: int, out: int, k: int, stride: int, pad: int, dilation: int) -> np.ndarray:
    """[size, k] indicator: input index r is read by kernel tap j at some output position."""
    a = np.zeros((size, k), np.float64)
    for j in range(k):
        rows = np.arange(out) * stride + j * dilation - pad
        rows = rows[(rows >= 0) & (rows < size)]
        a[rows, j] = 1.0
    return a


class WindowMeanEstimator(Estimator):
    """For an input ``x[b, c, h, w]`` of a 2-D convolution with kernel ``(kh, kw)``, strides, dilations
    and pads_begin, giving an output of ``(oh, ow)``:

    ``S[b, c, i, j] = 1/(oh*ow) * sum_{p, q} xpad[b, c, p*sh + i*dh - ph, q*sw + j*dw - pw]``

    the mean of what kernel tap ``(i, j)`` multiplies over all output positions (zero padding counts
    as 0). Convolution is linear, so the mean output of channel ``o`` for any weights ``W`` is exactly
    ``sum_{c,i,j} W[o, c, i, j] * S[c, i, j]``: bias correction uses it to get the mean shift that
    weight quantization causes on the real calibration inputs, padding and spatial structure included.

    In graph: each tap reads one residue class (of the stride) of rows and of columns, minus a few
    border rows/columns; the graph computes the class sums (one read of x) and the small border sums,
    and the taps are assembled from them exactly.
    """

    name = "window_mean"
    range_estimator = False   # requested by algorithms, not named in a config

    def __init__(self, side="max", outlier_prob=1e-4, kernel=(1, 1), strides=(1, 1), dilations=(1, 1),
                 pads_begin=(0, 0), output=(1, 1)):
        super().__init__(side, outlier_prob)
        self.kernel, self.strides, self.dilations = tuple(kernel), tuple(strides), tuple(dilations)
        self.pads_begin, self.output = tuple(pads_begin), tuple(output)

    def key(self):
        return (self.name, self.kernel, self.strides, self.dilations, self.pads_begin, self.output)

    def _matrices(self, h: int, w: int):
        a = _taps(h, self.output[0], self.kernel[0], self.strides[0], self.pads_begin[0], self.dilations[0])
        b = _taps(w, self.output[1], self.kernel[1], self.strides[1], self.pads_begin[1], self.dilations[1])
        return a / (self.output[0] * self.output[1]), b

    def reduce(self, x, axes):
        x = np.asarray(x, np.float64)
        a, b = self._matrices(x.shape[-2], x.shape[-1])
        return np.einsum("bchw,hi,wj->bcij", np.where(np.isfinite(x), x, 0.0), a, b).astype(np.float32)

    # ---- in-graph form: residue-class sums plus border corrections --------------------------------
    #: the in-graph form is used while the border (rows/columns some tap skips) is at most this wide
    max_border = 16

    def _plan(self, h: int, w: int):
        """Per axis: the rows each tap reads, the stride's residue class of each tap, and the border
        rows (in a tap's class but not read by it)."""
        def axis(size, out, k, stride, pad, dil):
            taps, border = [], set()
            for j in range(k):
                rows = np.arange(out) * stride + j * dil - pad
                rows = rows[(rows >= 0) & (rows < size)]
                r = (j * dil - pad) % stride
                cls = set(range(r, size, stride))
                missing = sorted(cls - set(rows.tolist()))
                taps.append((r, missing))
                border.update(missing)
            return taps, sorted(border)
        return (axis(h, self.output[0], self.kernel[0], self.strides[0], self.pads_begin[0], self.dilations[0]),
                axis(w, self.output[1], self.kernel[1], self.strides[1], self.pads_begin[1], self.dilations[1]))

    def graph_reduce(self, output, axes):
        shape = list(output.get_shape())
        if len(shape) != 4:
            return None
        (rtaps, rb), (ctaps, cb) = self._plan(shape[2], shape[3])
        if len(rb) > self.max_border or len(cb) > self.max_border:
            return None
        sh, sw = self.strides
        b, c, h, w = shape
        self._layout = (sh, sw, len(rb), len(cb), rb, cb, rtaps, ctaps, b, c)
        i64 = lambda v: ops.constant(np.array(v, np.int64))

        def class_sums(x, axis, stride, size):
            """[..] sums of x over each residue class of ``axis`` (that axis removed, classes appended last)."""
            parts = []
            for r in range(stride):
                begin, end, step = [0] * 4, list(x.get_partial_shape().to_shape()), [1] * 4
                begin[axis], step[axis] = r, stride
                sl = ops.strided_slice(x, i64(begin), i64(end), i64(step), [0] * 4, [0] * 4)
                parts.append(ops.unsqueeze(ops.reduce_sum(sl, i64([axis]), False), i64([-1])))
            return parts[0] if len(parts) == 1 else ops.concat(parts, -1)

        flat = []
        # Q[b, c, r, r']: sums over the residue classes of rows and columns
        rows_q = class_sums(output, 2, sh, h)                                    # [b, c, w, sh]
        q = class_sums(ops.transpose(rows_q, i64([0, 1, 3, 2])).output(0), 3, sw, w) if sw > 1 else \
            ops.unsqueeze(ops.reduce_sum(rows_q, i64([2]), False), i64([-1]))   # [b, c, sh, sw]
        flat.append(q)
        if rb:
            xr = ops.gather(output, i64(rb), i64(2)).output(0)                    # [b, c, nb, w]
            flat.append(class_sums(xr, 3, sw, w))                                # [b, c, nb, sw]
        if cb:
            xc = ops.gather(output, i64(cb), i64(3)).output(0)                    # [b, c, h, mb]
            flat.append(class_sums(xc, 2, sh, h))                                # [b, c, mb, sh]
        if rb and cb:
            flat.append(ops.gather(xr, i64(cb), i64(3)))                          # [b, c, nb, mb]
        parts = [ops.reshape(f, i64([b, c, -1]), False) for f in flat]
        return (ops.concat(parts, 2) if len(parts) > 1 else parts[0]).output(0)

    def from_graph(self, value):
        sh, sw, nb, mb, rb, cb, rtaps, ctaps, b, c = self._layout
        v = np.asarray(value, np.float64).reshape(b, c, -1)
        o = 0
        q = v[:, :, o:o + sh * sw].reshape(b, c, sh, sw); o += sh * sw
        rs = v[:, :, o:o + nb * sw].reshape(b, c, nb, sw); o += nb * sw
        cs = v[:, :, o:o + mb * sh].reshape(b, c, mb, sh); o += mb * sh
        cor = v[:, :, o:o + nb * mb].reshape(b, c, nb, mb)
        ri = {r: i for i, r in enumerate(rb)}
        ci = {r: i for i, r in enumerate(cb)}
        out = np.empty((b, c, len(rtaps), len(ctaps)))
        for i, (r, rmiss) in enumerate(rtaps):
            for j, (r2, cmiss) in enumerate(ctaps):
                total = q[:, :, r, r2].copy()
                for hh in rmiss:
                    total -= rs[:, :, ri[hh], r2]
                for ww in cmiss:
                    total -= cs[:, :, ci[ww], r]
                for hh in rmiss:
                    for ww in cmiss:
                        total += cor[:, :, ri[hh], ci[ww]]
                out[:, :, i, j] = total
        return (out / (self.output[0] * self.output[1])).astype(np.float32)


@hookimpl
def register_estimators(register):
    register(WindowMeanEstimator)
