"""Sensitivity analysis: how much of a quantized model's output error each quantizer causes.

A *quantizer* is a FakeQuantize (on activations or on constant weights) or a compressed int8 weight
(``Constant(i8) -> Convert -> [Subtract] -> Multiply``). Every quantizer ``i`` is given a boolean
switch ``s_i`` (an extra scalar Parameter): its readers get ``Select(s_i, q_i, f_i)`` where ``q_i`` is
the quantized value and ``f_i`` the float one (the FakeQuantize's input, or the FP32 model's weight
for a compressed weight). A layer whose bias an algorithm corrected keeps the corrected bias while
any quantizer feeding it is on and gets its FP32 bias back when all are off
(``Select(s_i or s_j, corrected, fp32)``), so that all switches off
is the FP32 function (up to FP32-exact rewrites such as channel alignment, which stay in both
branches). The model is compiled once, with the samples batched, and every
configuration of switches is just another input.

On ``S`` samples and for each model output ``k`` with reference ``y_k`` (all switches off, which is
the FP32 function) and ``y_k(c)`` under configuration ``c``:

``rel_k(c) = sqrt(sum_s ||y_k(c) - y_k||^2 / sum_s ||y_k||^2)``  and  ``E(c) = mean_k rel_k(c)^2``.

The sensitivity of quantizer ``i`` is ``E(only i on)``; its share is ``E_i / sum_j E_j`` (independent
quantization noises add in squared error, so the shares of all quantizers describe ``E(all on)``;
the report gives both sums so the approximation can be judged). The analysis also returns a
histogram of each quantizer's float input on the same samples (activations) or of its weights.
"""
import time
from typing import Any, Optional, Sequence

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .dataset import FeedBuilder, open_source, take
from .float_twin import TOLERANCE, TOLERANCE_4BIT, float_value
from .graph import Graph
from .sequence_ops import constant_sequence_weights, feeds_sequence_weights
from .histogram import HIST_BINS, _edges, _hist, _merge  # noqa: F401

#: samples per inference of the switch model (the model is reshaped to this batch where it can be)
BATCH = 8
#: screening: with more quantizers than this, each is first scored alone on one batch only; those whose
#: screened errors make up SCREEN_COVER of the total (at least SCREEN_KEEP) are scored on all samples
SCREEN_ABOVE, SCREEN_COVER, SCREEN_KEEP = 16, 0.9, 8
_F32 = {"INFERENCE_PRECISION_HINT": "f32"}
COMPRESSED = (ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4)   # compressed weights (4-bit: 16 levels or fewer)


def _weight_chain(c: ov.Node) -> Optional[ov.Output]:
    """The dequantized output (the Multiply) of a compressed 8- or 4-bit weight Constant, or None."""
    n = c
    for want in ("Convert", "Subtract", "Multiply"):
        outs = list(n.output(0).get_target_inputs())
        if len(outs) != 1:
            return None
        nxt = outs[0].get_node()
        if nxt.get_type_name() != want:
            if want == "Subtract":
                continue
            return None
        n = nxt
    return n.output(0) if n.get_type_name() == "Multiply" else None


def _fp32_twin(out: ov.Output, fp32: Optional[ov.Model], tolerance: float = TOLERANCE) -> Optional[np.ndarray]:
    """The FP32 model's constant that the readers of ``out`` read (matched by node name and port), rescaled
    where the quantized weight was (:func:`ovquant.float_twin.float_value`)."""
    if fp32 is None:
        return None
    by_name = {n.get_friendly_name(): n for n in fp32.get_ordered_ops()}
    for inp in out.get_target_inputs():
        twin = by_name.get(inp.get_node().get_friendly_name())
        if twin is None or inp.get_index() >= twin.get_input_size():
            continue
        v = Graph.constant_value(twin.input_value(inp.get_index()))
        if v is not None and tuple(v.shape) == tuple(out.get_shape()):
            return float_value(out, v.astype(out.get_element_type().to_dtype()), tolerance)
    return None


def find_quantizers(model: ov.Model, fp32: Optional[ov.Model] = None) -> list:
    """``[{name, kind, quantized: Output, float: Output or ndarray, low, high, levels}]`` in graph order.
    Compressed weights are found only with ``fp32`` (their float value comes from it)."""
    found = []
    for n in model.get_ordered_ops():
        t = n.get_type_name()
        if t == "FakeQuantize":
            lo, hi = (Graph.constant_value(n.input_value(i)) for i in (1, 2))
            kind = "weights" if Graph.constant_node(n.input_value(0)) is not None else "activations"
            found.append({"name": n.get_friendly_name(), "kind": kind, "quantized": n.output(0),
                          "float": n.input_value(0), "levels": int(n.get_attributes()["levels"]),
                          "low": None if lo is None else float(lo.min()),
                          "high": None if hi is None else float(hi.max())})
        elif t == "Constant" and n.get_output_element_type(0) in COMPRESSED:
            out = _weight_chain(n)
            bits = n.get_output_element_type(0).bitwidth
            ref = _fp32_twin(out, fp32, TOLERANCE if bits == 8 else TOLERANCE_4BIT) if out is not None else None
            if ref is not None:
                found.append({"name": n.get_friendly_name(), "kind": f"int{bits} weights", "quantized": out, "float": ref,
                              "levels": 2 ** bits, "low": float(ref.min()), "high": float(ref.max())})
    return found


_PASS = ("Reshape", "Transpose", "Convert", "Squeeze", "Unsqueeze")


def layers_reading(out: ov.Output) -> list:
    """The ops that read ``out``, looking through reshapes and converts."""
    found, frontier = [], [out]
    for _ in range(3):
        nxt = []
        for o in frontier:
            for r in o.get_target_inputs():
                n = r.get_node()
                (nxt.append(n.output(0)) if n.get_type_name() in _PASS else found.append(n))
        frontier = nxt
    return found


def bias_edits(model: ov.Model, fp32: Optional[ov.Model], quantizers: list) -> list:
    """Biases of the layers the quantizers feed that differ from the FP32 model's (bias correction):
    ``[{"input": the Add's bias Input, "float": FP32 value, "owners": quantizer indices}]``. A layer
    with all its quantizers back in float gets its FP32 bias back."""
    if fp32 is None:
        return []
    graph = Graph(model)
    by_name = {n.get_friendly_name(): n for n in fp32.get_ordered_ops()}
    edits: dict = {}
    for i, qz in enumerate(quantizers):
        for layer in layers_reading(qz["quantized"]):
            hit = graph.bias_of(layer)
            if hit is None:
                continue
            add, port = hit
            twin = by_name.get(add.get_friendly_name())
            ref = Graph.constant_value(twin.input_value(port)) if twin is not None and twin.get_input_size() > port else None
            cur = Graph.constant_value(add.input_value(port))
            if ref is None or ref.shape != cur.shape or np.array_equal(ref, cur):
                continue
            key = (add.get_friendly_name(), port)
            e = edits.setdefault(key, {"input": add.input(port), "float": ref.astype(cur.dtype), "owners": []})
            e["owners"].append(i)
    return list(edits.values())


def add_switches(model: ov.Model, quantizers: list, fp32: Optional[ov.Model] = None) -> list:
    """Put ``Select(switch_i, quantized_i, float_i)`` in front of every quantizer's readers, in place,
    and ``Select(any owner's switch, corrected bias, FP32 bias)`` on the biases of :func:`bias_edits`;
    returns the new boolean Parameters (added to the model's parameters, in quantizer order)."""
    edits = bias_edits(model, fp32, quantizers)
    switches = []
    for i, qz in enumerate(quantizers):
        out = qz["quantized"]
        readers = list(out.get_target_inputs())
        alt = qz["float"]
        alt = ops.constant(alt).output(0) if isinstance(alt, np.ndarray) else alt
        sw = ops.parameter([], ov.Type.boolean, name=f"ovquant_switch_{i}")
        sel = ops.select(sw, out, alt, name=f"{qz['name']}/ovquant_switch")
        for r in readers:
            r.replace_source_output(sel.output(0))
        switches.append(sw)
    for e in edits:
        cond = switches[e["owners"][0]].output(0)
        for j in e["owners"][1:]:
            cond = ops.logical_or(cond, switches[j]).output(0)
        cur = e["input"].get_source_output()
        e["input"].replace_source_output(ops.select(cond, cur, ops.constant(e["float"])).output(0))
    model.add_parameters(switches)
    return switches


def _batched(model: ov.Model, n_inputs: int, batch: int) -> int:
    """Reshape the model's first ``n_inputs`` inputs to batch ``batch`` (axis 0 of size 1); the batch
    the model ends up with (1 when it cannot be reshaped, or an output lacks the batch axis)."""
    if batch <= 1:
        return 1
    shapes = {}
    for inp in model.inputs[:n_inputs]:
        ps = inp.get_partial_shape()
        if ps.rank.is_dynamic or ps.rank.get_length() == 0 or (ps[0].is_static and ps[0].get_length() != 1):
            return 1
        dims = [ov.Dimension(batch)] + [ps[i] for i in range(1, ps.rank.get_length())]
        shapes[inp] = ov.PartialShape(dims)
    try:
        model.reshape(shapes)
    except Exception:
        return 1
    for o in model.outputs:
        ps = o.get_partial_shape()
        if ps.rank.is_dynamic or ps.rank.get_length() == 0 or ps[0].is_dynamic or ps[0].get_length() != batch:
            return 1
    return batch


def chunks(feeds: Sequence, batch: int, n_inputs: int) -> list:
    """``[(feed, real)]``: feeds of ``batch`` samples each (the last padded by repeating its last sample),
    with the number of real samples in each."""
    out = []
    for start in range(0, len(feeds), batch):
        part = feeds[start:start + batch]
        real = len(part)
        part = part + [part[-1]] * (batch - real)
        out.append(({i: np.concatenate([p[i] for p in part], axis=0) for i in range(n_inputs)}, real))
    return out


class Switchboard:
    """The quantized model with a switch per quantizer, compiled once; :meth:`errors` runs one
    configuration over all samples."""

    def __init__(self, q: ov.Model, fp32: Optional[ov.Model], samples: Sequence, batch: int = BATCH,
                 core: Optional[ov.Core] = None, histograms: bool = True):
        self.core = core or ov.Core()
        self.n_outputs = len(q.outputs)
        feeds = FeedBuilder(q.inputs)
        self.samples = [feeds(s, i) for i, s in enumerate(samples)]
        self.batch = min(batch, max(1, len(self.samples)))
        model, self.quantizers = self._build(q, fp32, self.batch)
        if self.batch > 1 and model is None:
            self.batch = 1
        if model is None:
            model, self.quantizers = self._build(q, fp32, 1)
        self.n_inputs = len(q.inputs)
        self.chunks = self._chunks()
        self.histograms = self._reference(model) if histograms else {}
        self.compiled = self.core.compile_model(model, "CPU", _F32)
        self.request = self.compiled.create_infer_request()
        if not histograms:
            self.reference = self._outputs(np.zeros(len(self.quantizers), bool))
        self.den = [sum(float((r[k].astype(np.float64) ** 2).sum()) for r in self.reference)
                    for k in range(self.n_outputs)]
        self.runs = self.chunk_runs = 0

    @staticmethod
    def _build(q: ov.Model, fp32, batch: int) -> tuple:
        model = q.clone()
        qz = [x for x in find_quantizers(model, fp32) if not feeds_sequence_weights(x)]
        add_switches(model, qz, fp32)
        constant_sequence_weights(model)
        if batch > 1 and _batched(model, len(q.inputs), batch) != batch:
            return None, qz
        return model, qz

    def _chunks(self) -> list:
        return chunks(self.samples, self.batch, self.n_inputs)

    def _infer(self, request, config: np.ndarray, n_out: int, n_chunks: Optional[int] = None) -> list:
        """Per chunk (the first ``n_chunks``, default all), the first ``n_out`` outputs (real samples
        only) under switches ``config``."""
        switches = {self.n_inputs + i: np.array(bool(v)) for i, v in enumerate(config)}
        res = []
        for feed, real in self.chunks[:n_chunks]:
            r = request.infer({**feed, **switches})
            res.append([np.array(r[k])[:real] if self.batch > 1 else np.array(r[k]) for k in range(n_out)])
        return res

    def _outputs(self, config: np.ndarray, n_chunks: Optional[int] = None) -> list:
        self.runs = getattr(self, "runs", 0) + 1
        self.chunk_runs = getattr(self, "chunk_runs", 0) + len(self.chunks[:n_chunks])
        return self._infer(self.request, config, self.n_outputs, n_chunks)

    def _reference(self, model: ov.Model) -> dict:
        """Run all switches off with each activation quantizer's float input as an extra output: the
        reference outputs, and a histogram per quantizer (weights: of their values)."""
        acts = [i for i, qz in enumerate(self.quantizers) if not isinstance(qz["float"], np.ndarray)
                and qz["kind"] == "activations"]
        extra = [ops.result(self.quantizers[i]["float"]) for i in acts]
        model.add_results(extra)
        req = self.core.compile_model(model, "CPU", _F32).create_infer_request()
        hists, values = {}, {i: [] for i in acts}
        switches = {self.n_inputs + i: np.array(False) for i in range(len(self.quantizers))}
        self.reference = []
        for feed, real in self.chunks:
            r = req.infer({**feed, **switches})
            self.reference.append([np.array(r[k])[:real] for k in range(self.n_outputs)])
            for j, i in enumerate(acts):
                values[i].append(_hist(np.array(r[self.n_outputs + j])[:real], self.quantizers[i]))
        for i in acts:
            hists[i] = _merge(values[i])
        for r in extra:
            model.remove_result(r)
        for i, qz in enumerate(self.quantizers):
            if i not in hists:
                v = qz["float"] if isinstance(qz["float"], np.ndarray) else Graph.constant_value(qz["float"])
                if v is not None:
                    hists[i] = _merge([_hist(v, qz)])
        return hists

    def errors(self, config: np.ndarray, n_chunks: Optional[int] = None) -> list:
        """Relative L2 error of each output under switches ``config`` (True: quantized), on the samples
        of the first ``n_chunks`` chunks (default: all)."""
        outs = self._outputs(np.asarray(config, bool), n_chunks)
        ref = self.reference[:len(outs)]
        rel = []
        for k in range(self.n_outputs):
            den = self.den[k] if n_chunks is None else sum(float((r[k].astype(np.float64) ** 2).sum()) for r in ref)
            num = sum(float(((o[k].astype(np.float64) - r[k]) ** 2).sum()) for o, r in zip(outs, ref))
            rel.append((num / den) ** 0.5 if den > 0 else (0.0 if num == 0 else float("inf")))
        return rel


def _output_names(model: ov.Model) -> list:
    return [o.get_any_name() if o.get_names() else o.get_node().get_friendly_name() for o in model.outputs]


def score(rel: Sequence[float]) -> float:
    """``E = mean_k rel_k^2`` over the model's outputs."""
    return float(np.mean(np.square(rel))) if len(rel) else 0.0


def fp32_pass_seconds(fp32: ov.Model, samples: Sequence, core: Optional[ov.Core] = None) -> float:
    """Wall time of one FP32 pass over ``samples``, one sample per inference (compiling not counted)."""
    core = core or ov.Core()
    feeds = FeedBuilder(fp32.inputs)
    req = core.compile_model(fp32, "CPU", _F32).create_infer_request()
    fs = [feeds(s, i) for i, s in enumerate(samples)]
    t0 = time.perf_counter()
    for f in fs:
        req.infer(f)
    return time.perf_counter() - t0


def _alone(board: Switchboard, i: int, n_chunks: Optional[int] = None) -> list:
    cfg = np.zeros(len(board.quantizers), bool)
    cfg[i] = True
    return board.errors(cfg, n_chunks)


def screened_errors(board: Switchboard, screen: bool = True) -> tuple:
    """``E(only i on)`` per quantizer as ``[(rel per output, samples)]``, and how many were screened.
    Screening (more than ``SCREEN_ABOVE`` quantizers and more than one chunk): every quantizer alone on
    the first chunk only, then the fewest top-screened ones whose screened errors make up
    ``SCREEN_COVER`` of the screened sum (at least ``SCREEN_KEEP``) again on all samples."""
    n, chunks = len(board.quantizers), len(board.chunks)
    if not screen or n <= SCREEN_ABOVE or chunks < 2:
        return [(_alone(board, i), len(board.samples)) for i in range(n)], 0
    first = board.chunks[0][1]
    res = [(_alone(board, i, 1), first) for i in range(n)]
    order = sorted(range(n), key=lambda i: -score(res[i][0]))
    total, acc = sum(score(r) for r, _ in res), 0.0
    for rank, i in enumerate(order):
        if rank >= SCREEN_KEEP and acc >= SCREEN_COVER * total:
            break
        acc += score(res[i][0])
        res[i] = (_alone(board, i), len(board.samples))
    return res, n


def analyze(board: Switchboard, names: Sequence[str], screen: bool = True) -> dict:
    """Each quantizer alone on (screened, see :func:`screened_errors`), and all on: the sensitivity
    report (quantizers ranked by share)."""
    n = len(board.quantizers)
    rows = []
    singles, n_screened = screened_errors(board, screen)
    for qz, (rel, seen) in zip(board.quantizers, singles):
        rows.append({"name": qz["name"], "kind": qz["kind"], "levels": qz["levels"], "low": qz["low"],
                     "high": qz["high"], "error": score(rel), "relative_l2": [round(r, 6) for r in rel],
                     "samples": seen})
    all_rel = board.errors(np.ones(n, bool))
    total = sum(r["error"] for r in rows)
    for i, r in enumerate(rows):
        r["share"] = r["error"] / total if total > 0 else 0.0
        h = board.histograms.get(i)
        if h is not None:
            e = _edges(board.quantizers[i])
            r["histogram"] = {"lo": float(e[0]), "hi": float(e[-1]), **h}
    rows.sort(key=lambda r: -r["error"])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return {"samples": len(board.samples), "batch": board.batch, "n_quantizers": n, "screened": n_screened,
            "screen_samples": board.chunks[0][1] if n_screened else None,
            "error_all_quantized": score(all_rel), "sum_of_errors": total,
            "outputs": [{"output": nm, "relative_l2": round(r, 6)} for nm, r in zip(names, all_rel)],
            "quantizers": rows}


def analyze_sensitivity(fp32_model: Any, int8_model: Any, samples: Any, n: int = 32, batch: int = BATCH,
                timing: bool = True) -> dict:
    """Rank the quantizers of ``int8_model`` by the output error each one causes on the first ``n`` of
    ``samples`` (see the module docstring). ``fp32_model`` gives the float value of compressed
    weights (FakeQuantizes need nothing from it). The result is JSON: ``quantizers`` (ranked, with
    ``error``, ``share``, ``relative_l2`` per output, ``histogram``), ``outputs`` (the error of each
    output with every quantizer on), and the cost: ``seconds``, ``inferences``, and with ``timing``
    ``cost_vs_fp32_pass`` (``seconds`` over one FP32 pass over the same samples)."""
    from .api import _as_model

    fp32, q = _as_model(fp32_model), _as_model(int8_model)
    rows = list(take(open_source(samples, list(fp32.inputs)), n))
    core = ov.Core()
    t0 = time.perf_counter()
    board = Switchboard(q, fp32, rows, batch=batch, core=core)
    t1 = time.perf_counter()
    out = analyze(board, _output_names(q))
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["setup_seconds"] = round(t1 - t0, 3)   # building and compiling the switch model, the reference pass
    out["inferences"] = board.chunk_runs + len(board.chunks)
    out["configurations"] = board.runs + 1
    if timing:
        one = fp32_pass_seconds(fp32, rows, core)
        out["fp32_pass_seconds"] = round(one, 4)
        out["cost_vs_fp32_pass"] = round(out["seconds"] / one, 2) if one > 0 else None
        out["configurations_cost_vs_fp32_pass"] = round((out["seconds"] - out["setup_seconds"]) / one, 2) if one > 0 else None
    return out
