"""Algorithm ``SQNRReport``: the signal-to-quantization-noise ratio of every FakeQuantize, per layer.

Put it after the algorithm that quantizes (DefaultQuantization or MinMaxQuantization). It sets
``new_stage = True``, so the pipeline runs a second pass over the calibration data on the *quantized*
model, and it changes nothing in the model: it only adds a report entry.

* **Activation FakeQuantize** ``y = FQ(x)``: per sample, the estimator ``sqnr_terms`` (registered by
  this package for this algorithm) reduces ``x`` to ``[mean(x^2), mean((FQ(x) - x)^2)]``; the
  ``mean`` aggregator averages them over the samples, and
  ``SQNR = 10 log10(signal / noise)`` dB. ``x`` is the FakeQuantize's input in the quantized model,
  so it carries the noise of the quantizers upstream; the noise measured is this quantizer's own.
* **Weight FakeQuantize**: the same ratio on the constant weights (no data needed).

Each entry names the FakeQuantize, the tensor it quantizes, the layers it feeds, its levels and the
SQNR in dB; the summary gives the lowest and the median, and the ``worst`` entries.

Params (``compression.algorithms[i].params``): ``stat_subset_size`` (samples of the second pass,
default all), ``worst`` (how many of the lowest entries to list, default 5), ``include_weights``
(report weight quantizers too, default true).
"""
import math
from typing import Optional

import attrs
import numpy as np
import openvino.opset13 as ops

from ovquant.algorithm import Algorithm
from ovquant.errors import ConfigError
from ovquant.quant_math import fake_quantize
from ovquant.statistics import Estimator, Statistic, TensorRef

from . import usage


def sqnr_db(signal: float, noise: float) -> float:
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


class SQNRTermsEstimator(Estimator):
    """Helper of ``SQNRReport``: per sample ``[mean(x^2), mean((FQ(x) - x)^2)]`` over the reduced axes,
    for the FakeQuantize given by the constructor params (ranges as flat tuples plus their shape).

    In graph: the same FakeQuantize op, ``Square`` and ``ReduceMean``; in numpy,
    :func:`ovquant.quant_math.fake_quantize`.
    The sample axis is always kept, so a rank-1 tensor gives ``[1, 2]``.
    """

    name = "sqnr_terms"

    def __init__(self, side="max", outlier_prob=1e-4, levels=256, range_shape=(), input_low=(0.0,),
                 input_high=(1.0,), output_low=(0.0,), output_high=(1.0,)):
        super().__init__(side, outlier_prob)
        self.levels, self.range_shape = int(levels), tuple(range_shape)
        self.ranges = tuple(np.asarray(r, np.float32).reshape(self.range_shape)
                            for r in (input_low, input_high, output_low, output_high))
        self._key = (self.name, self.levels, self.range_shape, tuple(input_low), tuple(input_high),
                     tuple(output_low), tuple(output_high))

    def key(self):
        return self._key

    def reduce(self, x, axes):
        x = np.asarray(x, np.float64)
        il, ih, ol, oh = (np.asarray(r, np.float64) for r in self.ranges)
        noise = (fake_quantize(x, il, ih, self.levels, ol, oh) - x) ** 2
        out = np.stack([np.mean(x * x, axis=axes), np.mean(noise, axis=axes)], axis=-1)
        return (out[None] if 0 in [a % max(x.ndim, 1) for a in axes] else out).astype(np.float32)

    def graph_reduce(self, output, axes):
        rank = output.get_partial_shape().rank.get_length()
        il, ih, ol, oh = (ops.constant(r) for r in self.ranges)
        fq = ops.fake_quantize(output, il, ih, ol, oh, self.levels)
        ax = ops.constant(np.array(sorted(axes), np.int64))
        sig = ops.reduce_mean(ops.multiply(output, output), ax, keep_dims=False)
        diff = ops.subtract(fq, output)
        noise = ops.reduce_mean(ops.multiply(diff, diff), ax, keep_dims=False)
        last = ops.constant(np.array([-1], np.int64))
        out = ops.concat([ops.unsqueeze(sig, last), ops.unsqueeze(noise, last)], -1)
        if 0 in [a % rank for a in axes]:
            out = ops.unsqueeze(out, ops.constant(np.array([0], np.int64)))
        return out.output(0)


@attrs.define(kw_only=True)
class SQNRParams:
    """Params of ``SQNRReport``. ``target_device`` is set by ovquant (from ``compression``)."""

    stat_subset_size: Optional[int] = None
    worst: int = 5
    include_weights: bool = True
    target_device: Optional[str] = None


class SQNRReport(Algorithm):
    """Reports the SQNR of every FakeQuantize of the quantized model (see the module docstring)."""

    name = "SQNRReport"
    params_class = SQNRParams
    new_stage = True

    @staticmethod
    def validate_params(params: SQNRParams, path: str) -> None:
        if params.stat_subset_size is not None and params.stat_subset_size < 1:
            raise ConfigError(f"{path}.stat_subset_size: must be at least 1, got {params.stat_subset_size}")
        if params.worst < 0:
            raise ConfigError(f"{path}.worst: must be at least 0, got {params.worst}")

    def __init__(self, params, context):
        super().__init__(params, context)
        self._requests: list = []

    @staticmethod
    def _fake_quantizes(graph):
        """(node, kind) of every FakeQuantize whose four range inputs are constants."""
        out = []
        for node in graph.nodes():
            if node.get_type_name() != "FakeQuantize":
                continue
            if any(graph.constant_value(node.input_value(i)) is None for i in range(1, 5)):
                continue
            kind = "weights" if graph.constant_value(node.input_value(0)) is not None else "activations"
            out.append((node, kind))
        return out

    def statistics(self, graph):
        self._requests = []
        for node, kind in self._fake_quantizes(graph):
            if kind != "activations":
                continue
            ranges = [np.asarray(graph.constant_value(node.input_value(i)), np.float32) for i in range(1, 5)]
            shape = np.broadcast_shapes(*(r.shape for r in ranges))
            params = {"levels": int(node.get_attributes()["levels"]), "range_shape": tuple(int(d) for d in shape)}
            for key, r in zip(("input_low", "input_high", "output_low", "output_high"), ranges):
                params[key] = tuple(float(v) for v in np.broadcast_to(r, shape).ravel())
            src = node.input_value(0)
            st = Statistic.make(TensorRef(src.get_node().get_friendly_name(), src.get_index()), "sqnr_terms",
                                "mean", None, params)
            self._requests.append((node, st))
            yield st

    @staticmethod
    def _entry(node, kind, signal, noise) -> dict:
        src = node.input_value(0)
        consumers = sorted(f"{i.get_node().get_friendly_name()}:{i.get_index()}"
                           for i in node.output(0).get_target_inputs())
        db = sqnr_db(signal, noise)
        return {"fake_quantize": node.get_friendly_name(), "kind": kind,
                "tensor": f"{src.get_node().get_friendly_name()}:{src.get_index()}",
                "layers": consumers, "levels": int(node.get_attributes()["levels"]),
                "sqnr_db": round(db, 3) if math.isfinite(db) else (None if math.isnan(db) else str(db)),
                "signal_power": float(signal), "noise_power": float(noise)}

    def apply(self, graph, stats) -> dict:
        entries = []
        for node, st in self._requests:
            signal, noise = (float(v) for v in np.asarray(stats[st], np.float64).reshape(-1)[:2])
            entries.append(self._entry(node, "activations", signal, noise))
        if self.params.include_weights:
            for node, kind in self._fake_quantizes(graph):
                if kind != "weights":
                    continue
                w = graph.constant_value(node.input_value(0)).astype(np.float64)
                il, ih, ol, oh = (graph.constant_value(node.input_value(i)).astype(np.float64) for i in range(1, 5))
                q = fake_quantize(w, il, ih, int(node.get_attributes()["levels"]), ol, oh)
                entries.append(self._entry(node, "weights", float(np.mean(w * w)), float(np.mean((q - w) ** 2))))
        finite = sorted((e["sqnr_db"], e["fake_quantize"]) for e in entries if isinstance(e["sqnr_db"], float))
        summary = {"n_fake_quantize": len(entries)}
        for kind in ("activations", "weights"):
            vals = [e["sqnr_db"] for e in entries if e["kind"] == kind and isinstance(e["sqnr_db"], float)]
            if vals:
                summary[kind] = {"n": len(vals), "min_sqnr_db": round(min(vals), 3),
                                 "median_sqnr_db": round(float(np.median(vals)), 3)}
        return {"summary": summary, "worst": [name for _, name in finite[:self.params.worst]],
                "entries": entries, "example_plugin_usage": usage.snapshot()}
