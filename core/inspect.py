"""``ovquant inspect``: list the quantizers of any IR (ovquant's, NNCF's or POT's)."""
import numpy as np
import openvino as ov

from .graph import Graph
from .io import read_model


def _range(fq: ov.Node) -> str:
    vals = [Graph.constant_value(fq.input_value(i)) for i in (1, 2)]
    if any(v is None for v in vals):
        return "range: not constant"
    lo, hi = vals
    if lo.size == 1 and hi.size == 1:
        return f"[{float(lo.ravel()[0]):.6g}, {float(hi.ravel()[0]):.6g}]"
    return f"[{float(lo.min()):.6g}, {float(hi.max()):.6g}] over {max(lo.size, hi.size)} channels"


#: element types of compressed weight constants -> the kind ``inspect`` lists them as
WEIGHT_TYPES = {ov.Type.i8: "int8 weights", ov.Type.u8: "int8 weights", ov.Type.i4: "int4 weights",
                ov.Type.u4: "int4 weights", ov.Type.nf4: "nf4 weights"}


def quantizers(model: ov.Model, prefix: str = "") -> list:
    """One dict per quantizer: FakeQuantize ops, and int8, int4 and nf4 weight constants (compressed weights), also
    inside the bodies of If, Loop and TensorIterator ops (named ``<op>[<body index>]/<name>``)."""
    out = []
    for n in model.get_ordered_ops():
        t = n.get_type_name()
        if t in ("If", "Loop", "TensorIterator"):
            for i in range(2 if t == "If" else 1):
                out += quantizers(n.get_function(i), f"{prefix}{n.get_friendly_name()}[{i}]/")
        elif t == "FakeQuantize":
            src = n.input_value(0)
            kind = "weights" if Graph.constant_node(src) is not None else "activations"
            out.append({"name": prefix + n.get_friendly_name(), "kind": kind, "levels": int(n.get_attributes()["levels"]),
                        "input": src.get_node().get_friendly_name(), "range": _range(n),
                        "consumers": [f"{c.get_node().get_type_name()} {c.get_node().get_friendly_name()}"
                                      for c in n.output(0).get_target_inputs()]})
        elif t == "Constant" and n.get_output_element_type(0) in WEIGHT_TYPES:
            et = n.get_output_element_type(0)
            data = Graph.constant_data(n)
            users = []
            frontier = [n.output(0)]
            for _ in range(4):  # Convert -> (Subtract) -> Multiply -> weighted op
                nxt = []
                for o in frontier:
                    for c in o.get_target_inputs():
                        node = c.get_node()
                        if node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose"):
                            nxt.append(node.output(0))
                        else:
                            users.append(f"{node.get_type_name()} {node.get_friendly_name()}")
                frontier = nxt
            rng = f"int [{int(data.min())}, {int(data.max())}]" if et.is_integral() else \
                f"[{float(data.min()):.6g}, {float(data.max()):.6g}]"
            out.append({"name": prefix + n.get_friendly_name(), "kind": WEIGHT_TYPES[et], "levels": None,
                        "input": et.get_type_name(), "range": rng if data.size else "empty", "consumers": sorted(set(users))})
    return out


def describe_quantizers(path: str) -> list:
    """Lines for the CLI: a summary, then one line per quantizer."""
    model = read_model(path)
    qs = quantizers(model)
    n_fq = sum(q["kind"] not in WEIGHT_TYPES.values() for q in qs)
    kinds = [k for k in dict.fromkeys(WEIGHT_TYPES.values()) if k == "int8 weights" or any(q["kind"] == k for q in qs)]
    counts = ", ".join(f"{sum(q['kind'] == k for q in qs)} {k.split()[0]} weight constants" for k in kinds)
    lines = [f"{path}: {n_fq} FakeQuantize, {counts}"]
    for q in qs:
        lv = f"levels {q['levels']}" if q["levels"] else q["input"]
        lines.append(f"  {q['kind']:<12} {q['name']}  {lv}  {q['range']}  -> {', '.join(q['consumers']) or '-'}")
    return lines
