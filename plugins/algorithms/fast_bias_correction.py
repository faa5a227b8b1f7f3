"""FastBiasCorrection: shift the biases of Convolution and MatMul layers with quantized weights so that
each output channel's mean matches FP32.

Weight quantization changes layer ``L``'s mean output by ``E[L(x; W)] - E[L(x; W_q)]``. Convolution and
MatMul are linear, so this is exactly ``d_o = sum_{c,i,j} (W - W_q)[o, c, i, j] * S[c, i, j]`` where
``S`` is the mean input each kernel tap sees over the calibration data (estimator ``window_mean``;
for 1x1 convolutions and MatMuls it is the per-channel input mean). The new bias is ``b' = b + d``.

``bias_correction_form: "fast"`` approximates ``S[c, i, j]`` by the channel's mean input times the
fraction of output positions where tap ``(i, j)`` reads inside the input (zero padding counted): one
per-channel mean per layer instead of the window means; the error it leaves is second order (it
multiplies the small weight error ``W - W_q``).

``bias_correction_form: "mean_blob"`` is POT's and NNCF's form instead: ``b' = ybar - L(xbar; W_q)``
with ``ybar`` the FP32 per-channel output mean and ``xbar`` a blob filled with the per-channel input
means (spatially constant, borders ignored).

POT's guard applies: a layer is corrected only if ``max_c |(b'_c - b_c) / b_c| < threshold`` (2.0 by
default; a zero bias channel makes the ratio infinite). Statistics come from the FP32 model in the
same pass as MinMax's; activation quantization is not included, as in POT.
"""
import numpy as np

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.graph import Graph
from ovquant.quant_math import weights_of
from ovquant.statistics import Statistic, TensorRef
from ovquant.plugins.algorithms.params import QuantizationParams, validate_quantization_params

from .common import conv_geometry, layer_input, tap_coverage
from .layers import mean_output

TARGET_TYPES = ("Convolution", "GroupConvolution", "MatMul")


class FastBiasCorrection(Algorithm):
    """Corrects the mean shift that weight quantization causes in each biased Conv/MatMul (see module)."""

    name = "FastBiasCorrection"
    params_class = QuantizationParams
    validate_params = staticmethod(validate_quantization_params)
    api_switch = "fast_bias_correction"
    api_switch_false = ("(NNCF's BiasCorrection) has no ovquant equivalent; ovquant corrects biases with "
                        "FastBiasCorrection (bias_correction_form='exact' gives each layer's exact shift)")

    def __init__(self, params, context):
        super().__init__(params, context)
        self.form = getattr(params, "bias_correction_form", "fast")
        self.layers = {}
        # POT's guard protects the mean-blob form from its own approximation error; the other forms
        # compute the weight-error shift directly and are not guarded unless a threshold is given
        th = getattr(params, "threshold", None)
        self.threshold = th if th is not None else (2.0 if self.form == "mean_blob" else np.inf)

    @classmethod
    def unimplemented_params(cls, params) -> list:
        """POT's keys these params set that have no effect here: ``apply_for_all_nodes: true`` (layers
        whose weights are not quantized have no weight error, so their correction is zero)."""
        if getattr(params, "apply_for_all_nodes", False):
            return [("apply_for_all_nodes", "true has no effect in ovquant: biases are corrected for the weight "
                                            "error, which layers without quantized weights do not have")]
        return []

    def _targets(self, graph: Graph):
        for node in graph.find(types=TARGET_TYPES):
            t = node.get_type_name()
            if t == "MatMul" and (Graph.constant_node(node.input_value(1)) is None
                                  or node.get_attributes().get("transpose_a", False)):
                continue
            if t != "MatMul" and Graph.constant_node(node.input_value(1)) is None:
                continue
            bias = graph.bias_of(node)
            if bias is None:
                continue
            yield node, bias

    def statistics(self, graph: Graph):
        for node, (add, _) in self._targets(graph):
            src = layer_input(node)
            x = TensorRef(src.get_node().get_friendly_name(), src.get_index())
            rank = src.get_partial_shape().rank.get_length()
            geo = conv_geometry(node)
            stats = {}
            if node.get_type_name() == "MatMul":
                stats["x"] = Statistic.make(x, "mean", "mean", rank - 1)
            elif geo is None:
                continue
            elif self.form == "exact" and geo["output"] is not None and not (
                    geo["kernel"] == (1, 1) and geo["strides"] == (1, 1) and geo["pads_begin"] == (0, 0)):
                stats["x"] = Statistic.make(x, "window_mean", "mean", 1, {k: v for k, v in geo.items() if k != "input"})
            else:
                stats["x"] = Statistic.make(x, "mean", "mean", 1)
            if self.form == "mean_blob":
                y = TensorRef(add.get_friendly_name(), 0)
                stats["y"] = Statistic.make(y, "mean", "mean", 1 if node.get_type_name() != "MatMul" else
                                            add.output(0).get_partial_shape().rank.get_length() - 1)
            self.layers[node.get_friendly_name()] = (x, stats, geo)
            yield from stats.values()

    def apply(self, graph: Graph, stats) -> dict:
        report = []
        for name, (x, st, geo) in self.layers.items():
            node = graph.node(name)
            w, wq = weights_of(node)
            done = self.context.state("FastBiasCorrection.corrected", set)
            if wq is None or name in done:
                continue  # weights not quantized, or already corrected for this quantization
            done.add(name)
            add, port = graph.bias_of(node)
            b_out = add.input_value(port)
            b = Graph.constant_value(b_out).astype(np.float64)
            shape = b.shape
            b = b.reshape(-1)
            s = np.asarray(stats[st["x"]], np.float64)
            s = self._transformed(x, s)
            if self.form == "mean_blob":
                if geo is not None:
                    s = self._blob(s, geo)
                new_b = self._transformed_out(add, np.asarray(stats[st["y"]], np.float64)) - mean_output(node, wq, s)
            else:
                if geo is not None and s.ndim == 1:
                    s = s.reshape(-1, 1, 1) * tap_coverage(geo)  # "fast": channel means, padding counted
                new_b = b + mean_output(node, w - wq, s)
            delta = new_b - b
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.abs(delta / b)
            magnitude = float(np.max(np.where(b == 0, np.where(delta == 0, 0.0, np.inf), ratio))) if b.size else 0.0
            ok = magnitude < self.threshold and bool(np.all(np.isfinite(new_b)))
            if ok:
                graph.set_constant(b_out, new_b.reshape(shape).astype(np.float32))
            report.append({"layer": name, "corrected": bool(ok), "magnitude": round(magnitude, 6),
                           "max_abs_shift": round(float(np.max(np.abs(delta))) if delta.size else 0.0, 8)})
        n_ok = sum(r["corrected"] for r in report)
        return {"form": self.form, "layers": report, "n_corrected": n_ok, "n_skipped": len(report) - n_ok,
                "summary": f"corrected the bias of {n_ok} of {len(report)} quantized layers ({self.form} form)"}

    # ---- helpers ---------------------------------------------------------------------------------
    def _transformed(self, x: TensorRef, s: np.ndarray) -> np.ndarray:
        """Statistics of a tensor an earlier algorithm of this stage changed per channel (its
        :class:`~ovquant.pipeline.ChannelTransform`), else ``s`` as measured."""
        t = self.context.transforms.get(x)
        return s if t is None else t.apply(s, 0)

    def _transformed_out(self, add, y: np.ndarray) -> np.ndarray:
        return self._transformed(TensorRef(add.get_friendly_name(), 0), y)

    @staticmethod
    def _blob(xbar: np.ndarray, geo: dict) -> np.ndarray:
        """POT/NNCF's mean blob: an input filled with the channel means, run through the layer with its
        own zero padding, so each tap sees the channel mean where it reads inside the input."""
        return xbar.reshape(-1, 1, 1) * tap_coverage(geo)


@hookimpl
def register_algorithms(register):
    register(FastBiasCorrection)
