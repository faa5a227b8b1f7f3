"""The bodies of ``If`` ops, quantized as NNCF does: each branch as a model of its own, with the calibration
data that reaches it.

One inference pass of the FP32 model over the calibration subset records, per sample, every input of every
top-level ``If`` (its condition and the values its bodies read). For ``If`` node ``k`` and branch ``b``
(0: then, 1: else), the samples whose condition selects ``b`` give that body's calibration set: body
parameter ``j`` gets the ``If`` input that the branch's input description maps to ``j``. The body is then
quantized with the same config (the same pipeline, target and preset, recursively, so nested ``If`` ops get
the same treatment) and put back with ``set_function``. A branch that no calibration sample takes stays
float (the report says so), and so does every body when an algorithm kept the whole model in float
(``whole_model_float`` in its report entry, e.g. where INT8 does not pay on the host). ``Loop`` and
``TensorIterator`` bodies are not quantized: their parameters take
values that change from one iteration to the next, which one pass over the outer model does not give.
"""
from typing import Any, Callable, Optional

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .dataset import FeedBuilder, take
from .inspect import quantizers


def if_nodes(model: ov.Model) -> list:
    """The top-level ``If`` ops of ``model``, in graph order."""
    return [n for n in model.get_ordered_ops() if n.get_type_name() == "If"]


def _inputs_per_sample(model: ov.Model, names: list, samples, subset_size: Optional[int]) -> dict:
    """``{If name: [[input 0 value, input 1 value, ...] per sample]}`` from the FP32 model (a clone with
    every input of those If ops as an output)."""
    probe = model.clone()
    nodes = {n.get_friendly_name(): n for n in probe.get_ordered_ops() if n.get_friendly_name() in names}
    slots, results = [], []
    for name in names:
        node = nodes[name]
        for k in range(node.get_input_size()):
            results.append(ops.result(node.input_value(k)))
            slots.append((name, k))
    extra = ov.Model(results, list(probe.get_parameters()), "ovquant_if_inputs")
    req = ov.Core().compile_model(extra, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    feeds = FeedBuilder(model.inputs)
    out: dict = {name: [] for name in names}
    for i, sample in enumerate(take(samples, subset_size)):
        req.infer(feeds(sample, i))
        for name in names:
            out[name].append([])
        for j, (name, _) in enumerate(slots):   # slots run through each If's inputs in order
            out[name][-1].append(np.array(req.get_output_tensor(j).data))
    return out


def quantize_if_bodies(float_model: ov.Model, quantized: ov.Model, samples: Any, subset_size: Optional[int],
                       quantize: Callable) -> list:
    """Quantize the branches of every top-level ``If`` of ``quantized`` (in place) with ``quantize(body,
    body_samples) -> (model, report)``; the body data comes from ``float_model`` (see module). Returns one
    report entry per branch."""
    ifs = if_nodes(quantized)
    if not ifs:
        return []
    names = [n.get_friendly_name() for n in ifs]
    values = _inputs_per_sample(float_model, names, samples, subset_size)
    entries = []
    for node in ifs:
        rows = values[node.get_friendly_name()]
        for branch, label in ((0, "then"), (1, "else")):
            body = node.get_function(branch)
            params = body.get_parameters()
            source = {d.body_parameter_index: d.input_index for d in node.get_input_descriptions(branch)}
            chosen = [r for r in rows if bool(np.asarray(r[0]).ravel()[0]) == (branch == 0)]
            entry = {"if": node.get_friendly_name(), "branch": label, "n_samples": len(chosen)}
            if not chosen:
                entry["summary"] = "left float: no calibration sample takes this branch"
            elif len(source) != len(params):
                entry["summary"] = "left float: a body parameter is not fed by the If's inputs"
            else:
                body_samples = [[r[source[j]] for j in range(len(params))] for r in chosen]
                q_body, rep = quantize(body, body_samples)
                node.set_function(branch, q_body)
                kinds = [x["kind"] for x in quantizers(q_body)]
                n_fq, n_int8 = kinds.count("activations") + kinds.count("weights"), \
                    kinds.count("int8 weights") + kinds.count("int4 weights")
                entry.update(n_fake_quantize=n_fq, n_int8_weights=n_int8, algorithms=rep.get("algorithms", []),
                             bodies=rep.get("if_bodies", []))
                if n_fq + n_int8:
                    entry["summary"] = f"quantized on {len(chosen)} sample(s): {n_fq} FakeQuantize op(s), {n_int8} int8 weight(s)"
                else:
                    why = "; ".join(a["summary"] for a in rep.get("algorithms", []) if a.get("summary"))
                    entry["summary"] = f"left float by its pipeline ({len(chosen)} sample(s)): {why}"
            entries.append(entry)
    quantized.validate_nodes_and_infer_types()
    return entries
