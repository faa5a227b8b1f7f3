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
aggregate and ``D^3`` to factor (why 256: docs/algorithms.md, LayerwiseTuning). Layers with shared
or non-constant weights, without a weight FakeQuantize, or with weight ranges that are neither per
output channel nor per tensor are skipped too; the report lists every skipped layer and why.
"""
import time
from typing import Optional

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.graph import Graph
from ovquant.quant_math import weight_source
from ovquant.statistics import Statistic, TensorRef
from ovquant.plugins.algorithms.params import QuantizationParams, validate_quantization_params

from ..estimators.input_gram import unpack
from .blas_threads import single_threaded_blas
from .common import conv_geometry
from .gptq import gptq, hessian_error
from .layers import mean_output
from .weight_rows import RowLayout, TuningProblem

TARGET_TYPES = ("Convolution", "GroupConvolution", "MatMul")


class LayerwiseTuning(Algorithm):
    """Tunes activation FakeQuantize ranges (MSE grid search), and the weight FakeQuantize scales (grid
    search), weight rounding (GPTQ) and biases (closed form) of each Conv/GroupConv/MatMul layer, on the
    quantized model's calibration data (see the module)."""

    name = "LayerwiseTuning"
    params_class = QuantizationParams
    validate_params = staticmethod(validate_quantization_params)
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
    #: tensor-wide squared error undervalues the few outlier channels a narrower range would clip)
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
        p = TuningProblem(graph, node, layout, h, m, self.tune_bias)
        candidates = self._scale_candidates(p)                              # 1. scale search
        best_f, k_new, q_new, err_new = self._round(p, candidates)        # 2. rounding
        take = err_new < p.pick(p.err_old) * (1.0 - self.min_gain)
        err_new = hessian_error(p.wr - q_new, p.h)
        f_used = np.where(take, best_f, 1.0)
        entry = p.entry(take, f_used, np.where(take, err_new, p.err_old))
        if not take.any():
            return entry
        self._write(graph, p, take, k_new, best_f, f_used)               # 3. weights and ranges
        q_final = np.where(take[..., None], q_new, p.q_old)
        if p.bias is not None:                                              # 4. bias
            delta = self._shift_bias(graph, node, p, q_final)
            if delta is not None:
                entry["bias_shift"] = round(float(np.max(np.abs(delta))) if delta.size else 0.0, 8)
        return entry

    def _scale_candidates(self, p: TuningProblem) -> list:
        """The range factors to round with: 1.0, and per row the factor of :attr:`scale_factors` whose
        nearest rounding has the smallest error (when it is not 1.0 everywhere)."""
        if not (self.tune_scales and len(self.scale_factors) > 1):
            return [1.0]
        errs = np.stack([p.pick(hessian_error(p.wr - p.grid.quantize(p.wr, np.full(p.gshape, f))[1], p.h))
                         for f in self.scale_factors])
        best = np.asarray(self.scale_factors, np.float64)[np.argmin(errs, axis=0)]
        return [1.0] if np.all(best == 1.0) else [1.0, best]

    def _round(self, p: TuningProblem, candidates: list) -> tuple:
        """GPTQ (or nearest) rounding with each candidate scale; rows are independent given H, so each row
        keeps its best result: ``(factor, levels, values, error)`` per row."""
        best_f, k_new, q_new, err_new = np.ones(p.gshape), None, None, np.full(p.gshape, np.inf)
        for f in candidates:
            f = np.broadcast_to(np.asarray(f, np.float64), p.gshape)
            if self.tune_rounding:
                def quantize_column(col, j, f=f):
                    k, q = p.grid.quantize(col[..., None], f)
                    return k[..., 0], q[..., 0]

                k, q = gptq(p.wr, p.h, quantize_column, self.damp, self.block)
            else:
                k, q = p.grid.quantize(p.wr, f)
            e = p.pick(hessian_error(p.wr - q, p.h))
            better = e < err_new
            if k_new is None:
                k_new, q_new = k, q
            k_new = np.where(better[..., None], k, k_new)
            q_new = np.where(better[..., None], q, q_new)
            best_f = np.where(better, f, best_f)
            err_new = np.where(better, e, err_new)
        return best_f, k_new, q_new, err_new

    @staticmethod
    def _write(graph: Graph, p: TuningProblem, take, k_new, best_f, f_used) -> None:
        """Write the new weights as values on the (rescaled) grid, and the rescaled ranges. Rows kept as
        they were are written on the grid too (their levels as the FakeQuantize rounds them)."""
        ones = np.ones(p.gshape)
        w_in = np.where(take[..., None], p.grid.value_in(k_new, best_f),
                        p.grid.value_in(p.grid.levels_of(p.wr, ones), ones))
        graph.set_constant(p.src, p.layout.from_rows(w_in).astype(np.float32))
        if not np.any(f_used != 1.0):
            return
        fq = p.fq
        for i, r in enumerate(p.ranges, start=1):
            f = p.layout.to_range(f_used, r.shape) if p.per_row else np.float64(f_used.flat[0])
            new = ops.constant(np.asarray(r * f, dtype=fq.input_value(i).get_element_type().to_dtype()))
            new.set_friendly_name(fq.input_value(i).get_node().get_friendly_name())
            fq.input(i).replace_source_output(new.output(0))
        graph.invalidate()

    @staticmethod
    def _shift_bias(graph: Graph, node: ov.Node, p: TuningProblem, q_final) -> Optional[np.ndarray]:
        """Cancel the change of the mean output, ``(W_q,old - W_q,new) m``, in the bias; the shift, or None
        when it is not finite (the bias is then left)."""
        add, port = p.bias
        b_out = add.input_value(port)
        b = Graph.constant_value(b_out).astype(np.float64)
        s = p.m.reshape(-1) if node.get_type_name() == "MatMul" else p.m.reshape((-1,) + p.layout.shape[-2:])
        delta = mean_output(node, p.layout.from_rows(p.q_old - q_final), s)
        if not np.all(np.isfinite(delta)):
            return None
        graph.set_constant(b_out, (b.reshape(-1) + delta).reshape(b.shape).astype(np.float32))
        return delta


@hookimpl
def register_algorithms(register):
    register(LayerwiseTuning)
