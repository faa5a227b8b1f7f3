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


def quantizers(model: ov.Model, prefix: str = "") -> list:
    """One dict per quantizer: FakeQuantize ops, and int8/uint8 weight constants (compressed weights), also
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
        elif t == "Constant" and n.get_output_element_type(0) in (ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4):
            data = np.asarray(n.get_data())
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
            out.append({"name": prefix + n.get_friendly_name(), "kind": "int8 weights", "levels": None,
                        "input": n.get_output_element_type(0).get_type_name(), "range": f"int [{int(data.min())}, {int(data.max())}]",
                        "consumers": sorted(set(users))})
    return out


def describe_quantizers(path: str) -> list:
    """Lines for the CLI: a summary, then one line per quantizer."""
    model = read_model(path)
    qs = quantizers(model)
    n_fq = sum(q["kind"] != "int8 weights" for q in qs)
    n_w = len(qs) - n_fq
    lines = [f"{path}: {n_fq} FakeQuantize, {n_w} int8 weight constants"]
    for q in qs:
        lv = f"levels {q['levels']}" if q["levels"] else q["input"]
        lines.append(f"  {q['kind']:<12} {q['name']}  {lv}  {q['range']}  -> {', '.join(q['consumers']) or '-'}")
    return lines
