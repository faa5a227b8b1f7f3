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

    In graph: ``S = A^T @ x @ B`` with constant tap-indicator matrices (two MatMuls, one read of x).
    """

    name = "window_mean"

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

    def graph_reduce(self, output, axes):
        shape = list(output.get_shape())
        if len(shape) != 4:
            return None
        a, b = self._matrices(shape[2], shape[3])
        xb = ops.matmul(output, ops.constant(b.astype(np.float32)), False, False)          # [B, C, H, kw]
        return ops.matmul(ops.constant(a.T.astype(np.float32)), xb, False, False).output(0)  # [B, C, kh, kw]


@hookimpl
def register_estimators(register):
    register(WindowMeanEstimator)
