#!/usr/bin/env python3
"""Compare two INT8 IRs FakeQuantize by FakeQuantize (matched by the consumer node and port the FQ feeds).

    python benchmarks/fq_diff.py A.xml B.xml [--all]

Per FQ: kind (weights: its data input is a Constant, maybe through Convert), levels, per-channel or per-tensor,
signed or unsigned, and the range (min input_low, max input_high). Prints FQs present in one IR only and those
whose scheme or range differs by more than 5%.
"""
import argparse
import sys

import numpy as np
import openvino as ov


def _const(out):
    n = out.get_node()
    while n.get_type_name() == "Convert":
        n = n.input_value(0).get_node()
    return n.get_type_name() == "Constant", n


def _val(out):
    ok, n = _const(out)
    return np.asarray(n.get_data(), np.float64) if ok else None


def fqs(xml):
    m = ov.Core().read_model(xml)
    res = {}
    for n in m.get_ordered_ops():
        if n.get_type_name() != "FakeQuantize":
            continue
        lo, hi = _val(n.input_value(1)), _val(n.input_value(2))
        weights = _const(n.input_value(0))[0]
        src = n.input_value(0).get_node()
        for t in n.output(0).get_target_inputs():
            c = t.get_node()
            while c.get_type_name() in ("Convert", "Reshape", "Transpose") and weights:
                nxt = list(c.output(0).get_target_inputs())
                if not nxt:
                    break
                t = nxt[0]
                c = t.get_node()
            key = (c.get_friendly_name(), t.get_index())
            res[key] = {"w": weights, "levels": int(n.get_attributes()["levels"]), "pc": lo.size > 1,
                        "lo": float(lo.min()), "hi": float(hi.max()), "signed": bool(lo.min() < 0),
                        "src": src.get_friendly_name(), "lo_a": lo, "hi_a": hi}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--all", action="store_true")
    a = ap.parse_args(argv)
    A, B = fqs(a.a), fqs(a.b)
    for k in sorted(set(A) | set(B)):
        x, y = A.get(k), B.get(k)
        if x is None or y is None:
            print(f"{'A' if y is None else 'B'} only: {k}")
            continue
        sch = lambda q: f"{'W' if q['w'] else 'A'} L{q['levels']} {'pc' if q['pc'] else 'pt'} {'s' if q['signed'] else 'u'}"
        rel = lambda u, v: abs(u - v) / max(abs(u), abs(v), 1e-12)
        diff = sch(x) != sch(y) or rel(x["hi"], y["hi"]) > .05 or rel(x["lo"], y["lo"]) > .05
        if diff or a.all:
            print(f"{k[0][:60]:60s}:{k[1]} A[{sch(x)} {x['lo']:.4g},{x['hi']:.4g}] B[{sch(y)} {y['lo']:.4g},{y['hi']:.4g}]")
    print(f"A {len(A)} FQ, B {len(B)} FQ", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
