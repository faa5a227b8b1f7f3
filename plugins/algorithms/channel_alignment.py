"""ActivationChannelAlignment: align the per-channel ranges of a layer's output before MinMax, and fold
the shift and scale into the producer's and the consumer's weights and biases (POT's math).

Pairs: a producer Convolution with constant weights and a constant bias Add, whose output feeds only a
consumer Convolution (one group, stride 1, dilation 1, no padding: in practice a 1x1 convolution) with
constant weights, with no activation in between. On the producer's biased output ``y``:

``lo_c = median_samples(quantile_c(y, 1e-4))``, ``hi_c = median_samples(quantile_c(y, 1 - 1e-4))``,
``a_c = (lo_c + hi_c) / 2``, ``r_c = hi_c - lo_c``, ``s_c = clip(r_c / median(r[r > 0]), 1e-2, 1e2)``
(``s_c = 1`` where ``r_c <= 0``).

The producer then computes ``y' = (y - a) / s``: ``W_in[o] /= s_o`` and ``b_in = (b_in - a) / s``; the
consumer compensates exactly: ``W_out[:, c] *= s_c`` and ``b_out += sum_{kh,kw} W_out[:, c] @ a`` (the
mean shift only if the consumer has a bias). The consumer's weights then use the saturation-fix grid
on CPU, as POT does. MinMax and FastBiasCorrection of the same stage derive the aligned tensor's
statistics from per-channel ones, so no extra pass over the data is needed; this requires min, max or
abs_max activation estimators (with quantile estimators the pairs are left alone and reported).
"""
import numpy as np

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.graph import Graph
from ovquant.pipeline import ChannelTransform
from ovquant.quant_math import weight_source
from ovquant.statistics import Statistic, TensorRef
from ovquant.plugins.algorithms.params import QuantizationParams, validate_quantization_params

from .derived import DERIVABLE
from .placement import resolve_ignored

QUANTILE = 1e-4


def _user_estimators(params) -> set:
    types = set()
    for re_ in (getattr(params.activations, "range_estimator", None) if params.activations else None,
                params.range_estimator):
        if re_ is None:
            continue
        if re_.preset == "quantile":
            types.add("quantile")
        for side in (re_.min, re_.max):
            if side is not None and side.type:
                types.add(side.type)
        break
    return types


class ActivationChannelAlignment(Algorithm):
    """Aligns per-channel activation ranges between conv pairs (see the module docstring)."""

    name = "ActivationChannelAlignment"
    params_class = QuantizationParams
    validate_params = staticmethod(validate_quantization_params)

    def __init__(self, params, context):
        super().__init__(params, context)
        self.pairs = []
        self.skip_reason = None

    def find_pairs(self, graph: Graph) -> list:
        pairs = []
        ignored, _ = resolve_ignored(graph, self.params.ignored)   # names, regexes and op types, as MinMax
        for c in graph.find(types="Convolution"):
            a = c.get_attributes()
            if any(a["pads_begin"]) or any(a["pads_end"]) or any(s != 1 for s in a["strides"]) \
                    or any(d != 1 for d in a["dilations"]) or weight_source(c) is None:
                continue
            add = c.input_value(0).get_node()
            if add.get_type_name() != "Add" or len(Graph.consumers(add.output(0))) != 1:
                continue
            producer = None
            for port in (0, 1):
                p = add.input_value(port).get_node()
                if p.get_type_name() == "Convolution" and weight_source(p) is not None:
                    bias = graph.bias_of(p)
                    if bias is not None and bias[0] is add:
                        producer = p
            if producer is None or {producer.get_friendly_name(), c.get_friendly_name()} & ignored:
                continue
            pairs.append((producer.get_friendly_name(), add.get_friendly_name(), c.get_friendly_name()))
        return pairs

    def statistics(self, graph: Graph):
        user = _user_estimators(self.params)
        if user - DERIVABLE:
            self.skip_reason = (f"activation range estimators {sorted(user - DERIVABLE)} cannot be derived for "
                                "aligned channels; channel alignment is off for this config")
            return
        for p, add, c in self.find_pairs(graph):
            t = TensorRef(add, 0)
            lo = Statistic.make(t, "quantile", "median", 1, {"side": "min", "outlier_prob": QUANTILE})
            hi = Statistic.make(t, "quantile", "median", 1, {"side": "max", "outlier_prob": QUANTILE})
            self.pairs.append((p, add, c, lo, hi))
            self.context.transforms.announce(t, 1)
            yield lo
            yield hi

    def apply(self, graph: Graph, stats) -> dict:
        changed = []
        for p, add, c, lo_st, hi_st in self.pairs:
            lo = np.asarray(stats[lo_st], np.float64).reshape(-1)
            hi = np.asarray(stats[hi_st], np.float64).reshape(-1)
            prod, cons, add_node = graph.node(p), graph.node(c), graph.node(add)
            w_in_out = weight_source(prod)
            w_out_out = weight_source(cons)
            w_in = Graph.constant_value(w_in_out).astype(np.float64)
            w_out = Graph.constant_value(w_out_out).astype(np.float64)
            _, bport = graph.bias_of(prod)
            b_in_out = add_node.input_value(bport)
            b_in = Graph.constant_value(b_in_out).astype(np.float64)
            cbias = graph.bias_of(cons)
            if w_in.shape[0] != lo.size or w_out.shape[1] != lo.size:
                continue
            amean = (lo + hi) / 2
            shift = np.zeros_like(amean)
            if cbias is not None:
                cadd, cport = cbias
                b_out_out = cadd.input_value(cport)
                b_out = Graph.constant_value(b_out_out).astype(np.float64)
                b_in = b_in - amean.reshape(b_in.shape)
                b_out = b_out + (w_out.sum(axis=(2, 3)) @ amean).reshape(b_out.shape)
                graph.set_constant(b_out_out, b_out)
                shift = amean
            ascale = hi - lo
            scale = np.ones_like(ascale)
            if np.any(ascale > 0):
                scale = ascale / np.median(ascale[ascale > 0])
                scale[ascale <= 0] = 1.0
                scale = np.clip(scale, 1e-2, 1e2)
                w_in = w_in / scale.reshape((-1,) + (1,) * (w_in.ndim - 1))
                b_in = b_in / scale.reshape(b_in.shape)
                w_out = w_out * scale.reshape((1, -1) + (1,) * (w_out.ndim - 2))
            graph.set_constant(w_in_out, w_in)
            graph.set_constant(w_out_out, w_out)
            graph.set_constant(b_in_out, b_in)
            self.context.transforms.record(TensorRef(add, 0), ChannelTransform(1, shift, scale, saturation_fix=(c,)))
            changed.append({"producer": p, "consumer": c, "mean_aligned": cbias is not None,
                            "scale_range": [round(float(scale.min()), 4), round(float(scale.max()), 4)]})
        out = {"pairs": changed, "n_pairs": len(changed),
               "summary": f"aligned the channels of {len(changed)} producer/consumer pair(s)"}
        if self.skip_reason:
            out["skipped"] = self.skip_reason
        return out


@hookimpl
def register_algorithms(register):
    register(ActivationChannelAlignment)
