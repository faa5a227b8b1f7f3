#!/usr/bin/env python3
"""The zoo's INT8 models scored natively and with oneDNN capped at AVX2 (no VNNI): does their accuracy hold
on a CPU that runs int8 without VNNI?

    python benchmarks/zoo_isa.py [--cases a,b] [--isa native,AVX2] [--out F.jsonl]
                                 [--variant NAME='{"saturation_fix": "all"}' ...] [--score NAME,...]
    python benchmarks/zoo_isa.py --table F.jsonl

Without VNNI, oneDNN's int8 convolutions multiply u8 by s8 with ``vpmaddubsw``, whose pair sums saturate at
int16: that is what ``saturation_fix`` guards against (7-bit weights on the first layers). The models are the
zoo run's (``$OVQ_ZOO_DIR/runs/<case>/ovquant.xml`` and ``nncf.xml``, quantized on the zoo's host), so this
scores the deployed files, not a quantization on the capped host. Each (case, ISA) runs in a process of its own
(``ONEDNN_MAX_CPU_ISA`` is read when the CPU plugin loads): the FP32 model and both INT8 models run on the
case's evaluation rows (benchmarks/zoo's run_model, f32 inference precision) and are scored by the zoo's
evaluate, with the FP32 outputs of the same process as the reference. One JSON line per case and ISA.
``--variant NAME=JSON`` first quantizes each case with ovquant's default plus those keywords (on this host,
natively; benchmarks/zoo/quantize_worker.py) into ``runs/<case>/NAME.xml`` and scores it beside the others;
``--score NAME,...`` scores such files of an earlier run as they are.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchmarks.zoo.common import emit, zoo_dir  # noqa: E402
from benchmarks.slow_int8 import host_isa, isa_worker, primitives, read_lines  # noqa: E402

TOOLS = ("ovquant", "nncf")


def quantize_variant(case: str, name: str, overrides: str) -> None:
    from benchmarks.zoo.cases import CASES

    d = os.path.join(zoo_dir(), case)
    cmd = [sys.executable, os.path.join(HERE, "zoo", "quantize_worker.py"), "--tool", "ovquant",
           "--model", os.path.join(d, "model.xml"), "--calib", os.path.join(d, "calib.npz"),
           "--out", os.path.join(zoo_dir(), "runs", case, f"{name}.xml"), "--preset", "performance"]
    if CASES[case].get("model_type"):
        cmd += ["--model-type", CASES[case]["model_type"]]
    env = {**os.environ, "OVQ_ZOO_OVERRIDES": overrides,
           "PYTHONPATH": os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{case}: variant {name} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")


def worker(case: str, tools=TOOLS) -> dict:
    import openvino as ov
    from benchmarks.zoo.cases import CASES, evaluate, load_eval, run_model

    spec, d = CASES[case], os.path.join(zoo_dir(), case)
    ev = load_eval(d)
    ref = run_model(os.path.join(d, "model.xml"), ev)
    fp = evaluate(case, spec, d, ev, ref, ref)
    out = {"case": case, "isa": host_isa(), "primary": spec["primary"], "higher_better": spec["higher_better"],
           "fp32": fp["metrics"][spec["primary"]]}
    for tool in tools:
        xml = os.path.join(zoo_dir(), "runs", case, f"{tool}.xml")
        if not os.path.exists(xml):
            raise SystemExit(f"{xml} is missing: run python benchmarks/zoo/run.py --case {case} first")
        e = evaluate(case, spec, d, ev, run_model(xml, ev), ref)
        compiled = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        out[tool] = {"metric": e["metrics"][spec["primary"]],
                     "rel_l2": max(o["rel_l2_mean"] for o in e["outputs"]),
                     "int8_primitives": sorted({k.split("/")[-1] for k in primitives(compiled)
                                                if k.split("/")[1] in ("u8", "i8")})}
    return out


def _m(r: dict, v: float) -> str:
    if r["primary"] in ("line_acc", "top1", "box_f1"):
        return f"{100 * v:.2f}%"
    return f"{100 * v:.3f}%" if r["primary"] == "nme" else f"{v:.4f}"


def table(rows: list) -> str:
    """Per case: FP32 and each tool's metric natively and capped at AVX2, and the change the cap makes."""
    by = {}
    for r in rows:
        by.setdefault(r["case"], {})["capped" if "capped" in r["isa"] else "native"] = r
    out = ["| case | metric | FP32 native / AVX2 | ovquant native / AVX2 (change) | NNCF native / AVX2 (change) "
           "| ovquant rel L2 (worst output's row mean) native / AVX2 | ovquant's int8 primitives at AVX2 |", "|---|---|---|---|---|---|---|"]
    tools = list(TOOLS) + sorted({k for r in rows for k, v in r.items() if isinstance(v, dict) and "metric" in v} - set(TOOLS))
    out[0] = out[0].replace("| NNCF native / AVX2 (change) ", "".join(f"| {t} native / AVX2 (change) " for t in tools[1:]))
    out[1] = "|---" * (5 + len(tools)) + "|"
    for case, pair in by.items():
        n, a = pair.get("native"), pair.get("capped")
        if not n or not a or "error" in n or "error" in a:
            err = next((x["error"] for x in (n, a) if x and "error" in x), "not run")
            out.append(f"| {case} | error: {err} |" + " |" * (3 + len(tools)))
            continue
        arrow = " ↑" if n["higher_better"] else " ↓"
        cells = [case, n["primary"] + arrow, f"{_m(n, n['fp32'])} / {_m(a, a['fp32'])}"]
        for tool in tools:
            if tool not in n or tool not in a:
                cells.append("-")
                continue
            ch = a[tool]["metric"] - n[tool]["metric"]
            chs = f"{100 * ch:+.2f} pt" if n["primary"] != "lee_spearman" else f"{ch:+.4f}"
            cells.append(f"{_m(n, n[tool]['metric'])} / {_m(a, a[tool]['metric'])} ({chs})")
        cells.append(f"{n['ovquant']['rel_l2']:.4f} / {a['ovquant']['rel_l2']:.4f}")
        cells.append(", ".join(a["ovquant"]["int8_primitives"]) or "none (float)")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=None)
    ap.add_argument("--isa", default="native,AVX2")
    ap.add_argument("--out", default=None)
    ap.add_argument("--table", default=None, help="print the markdown table of a .jsonl written by --out")
    ap.add_argument("--variant", action="append", default=[], help="NAME=JSON: quantize with these keywords too")
    ap.add_argument("--score", default="", help="NAME,...: also score runs/<case>/NAME.xml as it is (an earlier --variant)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tools", default=",".join(TOOLS), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.table:
        print(table(read_lines(a.table)))
        return 0
    if a.worker:
        print(json.dumps(worker(a.worker, a.tools.split(","))), flush=True)
        return 0
    from benchmarks.zoo.cases import CASES

    cases = a.cases.split(",") if a.cases else [c for c in CASES if os.path.exists(os.path.join(zoo_dir(), c, "model.xml"))]
    variants = dict(v.split("=", 1) for v in a.variant)
    for case in cases:
        for name, overrides in variants.items():
            quantize_variant(case, name, overrides)
        for isa in a.isa.split(","):
            scored = [*TOOLS, *variants, *[n for n in a.score.split(",") if n and n not in variants]]
            emit(isa_worker(__file__, case, isa, ["--tools", ",".join(scored)]), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
