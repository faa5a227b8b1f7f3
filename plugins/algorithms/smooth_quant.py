"""SmoothQuant: migrate activation outliers of MatMul inputs into the MatMul weights.

For a group of MatMuls with constant weights that read the same activation ``x`` (last axis: ``K``
channels), with ``a_k = max over samples of max |x[..., k]|`` and, per MatMul, ``w_k`` the largest
|weight| that multiplies channel ``k``:

``s_k = a_k^alpha / w_k^(1 - alpha)``, clipped to ``[quantile_0.1(s), 100]``; of the group's candidate
vectors the one with the best ``min(s) / max(s)`` is used for every MatMul of the group.

The MatMuls then read ``x / s`` (a Multiply inserted on their inputs only) and their weights become
``W * s`` along ``K``: the FP32 function is unchanged, and activation ranges are flatter. MinMax and
FastBiasCorrection of the same stage derive the smoothed tensor's statistics (no extra pass).
Default ``alpha`` 0.95, as NNCF uses for MatMul.
"""
import numpy as np
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.graph import Graph
from ovquant.pipeline import ChannelTransform
from ovquant.quant_math import weight_source
from ovquant.statistics import Statistic, TensorRef
from ovquant.plugins.algorithms.params import QuantizationParams, validate_quantization_params

EPS = 1e-8


def _in_axis(node, rank: int) -> int:
    """Axis of a MatMul's constant weights that multiplies the input channels."""
    return rank - 1 if node.get_attributes().get("transpose_b", False) else rank - 2


class SmoothQuant(Algorithm):
    """Scales MatMul input channels into the weights (see the module docstring)."""

    name = "SmoothQuant"
    params_class = QuantizationParams
    validate_params = staticmethod(validate_quantization_params)

    def __init__(self, params, context):
        super().__init__(params, context)
        self.alpha = getattr(params, "smooth_quant_alpha", None) or 0.95
        self.groups = []

    def _groups(self, graph: Graph, ignored: set) -> dict:
        groups: dict = {}
        for n in graph.find(types="MatMul"):
            if n.get_friendly_name() in ignored or n.get_attributes().get("transpose_a", False):
                continue
            w = weight_source(n)
            src = n.input_value(0)
            if w is None or Graph.constant_node(src) is not None or len(w.get_target_inputs()) != 1:
                continue
            if w.get_partial_shape().rank.get_length() != 2:
                continue
            groups.setdefault((src.get_node().get_friendly_name(), src.get_index()), []).append(n.get_friendly_name())
        # only smooth a tensor when no other consumer could share its quantizer
        out = {}
        for key, names in groups.items():
            out_ = graph.node(key[0]).output(key[1])
            others = [i.get_node() for i in out_.get_target_inputs() if i.get_node().get_friendly_name() not in names]
            if all(o.get_type_name() in self.context_ignored_types for o in others):
                out[key] = names
        return out

    @property
    def context_ignored_types(self) -> tuple:
        from .minmax import TRANSFORMER_IGNORED_TYPES
        from ovquant.config import normalize_model_type

        return TRANSFORMER_IGNORED_TYPES if normalize_model_type(self.params.model_type) == "transformer" else ()

    def statistics(self, graph: Graph):
        ignored = set(self.params.ignored.scope)
        for key, names in self._groups(graph, ignored).items():
            out = graph.node(key[0]).output(key[1])
            ps = out.get_partial_shape()
            if ps.rank.is_dynamic or ps[ps.rank.get_length() - 1].is_dynamic:
                continue
            axis = ps.rank.get_length() - 1
            t = TensorRef(*key)
            st = Statistic.make(t, "abs_max", "max", axis, {"side": "max"})
            self.groups.append((t, names, axis, st))
            self.context.transforms.announce(t, axis)
            yield st

    def apply(self, graph: Graph, stats) -> dict:
        report = []
        for t, names, axis, st in self.groups:
            act = np.asarray(stats[st], np.float64).reshape(-1)
            best, best_ratio = None, -1.0
            for name in names:
                node = graph.node(name)
                w = np.abs(Graph.constant_value(weight_source(node)).astype(np.float64))
                w_in = w.max(axis=1 - _in_axis(node, 2))   # over the output channels
                s = np.power(np.maximum(act, EPS), self.alpha) / (np.power(np.maximum(w_in, EPS), 1 - self.alpha) + EPS)
                s = np.where(act > 0, s, 1.0)
                s = np.clip(s, np.quantile(s, 0.1), 100.0)
                ratio = float(s.min() / s.max())
                if ratio > best_ratio:
                    best, best_ratio = s, ratio
            if best is None or not np.all(np.isfinite(best)) or np.all(best == 1.0):
                continue
            src = graph.node(t.node).output(t.port)
            rank = src.get_partial_shape().rank.get_length()
            inv = (1.0 / best).astype(np.float32).reshape([1] * (rank - 1) + [-1])
            mul = ops.multiply(src, ops.constant(inv), name=f"{t.node}/smooth_quant")
            for name in names:
                node = graph.node(name)
                wout = weight_source(node)
                w = Graph.constant_value(wout).astype(np.float64)
                shape = [1, 1]
                shape[_in_axis(node, 2)] = -1
                graph.set_constant(wout, w * best.reshape(shape))
                node.input(0).replace_source_output(mul.output(0))
            graph.invalidate()
            self.context.transforms.record(t, ChannelTransform(axis, np.zeros_like(best), best))
            report.append({"tensor": str(t), "matmuls": names, "scale_range": [round(float(best.min()), 4),
                                                                               round(float(best.max()), 4)]})
        return {"alpha": self.alpha, "smoothed": report, "n_smoothed": len(report),
                "summary": f"moved activation outliers into the weights of {len(report)} MatMul(s) (alpha {self.alpha})"}


@hookimpl
def register_algorithms(register):
    register(SmoothQuant)
