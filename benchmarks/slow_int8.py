#!/usr/bin/env python3
"""INT8 vs FP32 latency of every zoo case on this host and with oneDNN capped at AVX2 (no VNNI), and what
``skip_slow_int8`` (SlowInt8Check) makes of the cases where INT8 is slower (issue 15, item 6).

    python benchmarks/slow_int8.py [--cases a,b] [--isa native,AVX2] [--requantize auto|all|none] [--out F.jsonl]
    python benchmarks/slow_int8.py --table F.jsonl          (the markdown table of docs/sensitivity.md)

Each (case, ISA) runs in a process of its own (``ONEDNN_MAX_CPU_ISA`` is read when OpenVINO's CPU plugin
loads; the exec graph's primitive types show that it is honoured: ``brgemm_avx512_i8`` natively,
``jit_gemm_i8`` capped at AVX2). The models are the zoo run's (``runs/<case>/ovquant.xml``, ``nncf.xml``),
compiled with the latency hint and f32 inference precision, and timed on the case's first calibration row
in 7 interleaved rounds (about 1.5 s per model in all); the table gives the median of the per-round ratio
``t_fp32 / t_int8`` (INT8's speed in FP32's units, > 1 is faster) and its min-max. With ``--requantize``
(default ``auto``: where ovquant's INT8 is slower than FP32 at that ISA) the case is quantized again with
ovquant's default in that process, SlowInt8Check times the host, and the result is timed the same way.
The zoo run's ovquant model already went through SlowInt8Check on the zoo's host: natively, a case whose
full INT8 model was slower shows up here as FP32 itself (speed 1 within noise, no int8 primitives).
One JSON line per case and ISA; the machine is shared, so the spread matters.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import time
from typing import Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchmarks.zoo.common import emit, zoo_dir  # noqa: E402

ZOO = zoo_dir()
CFG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def host_isa() -> str:
    flags = set(open("/proc/cpuinfo").read().split())
    best = "AMX" if "amx_int8" in flags else "AVX512-VNNI" if "avx512_vnni" in flags else \
        "AVX-VNNI" if "avx_vnni" in flags else "AVX2"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{best}, oneDNN capped at {cap}" if cap else best


def primitives(compiled) -> dict:
    """Counts of (layer type, runtime precision, primitive) for the compute layers of the exec graph."""
    c = collections.Counter()
    for n in compiled.get_runtime_model().get_ordered_ops():
        r = n.get_rt_info()
        t = r["layerType"].astype(str)
        if t in ("FullyConnected", "Convolution", "MatMul", "Deconvolution", "ScaledDotProductAttention"):
            c[f"{t}/{r['runtimePrecision'].astype(str)}/{r['primitiveType'].astype(str)}"] += 1
    return dict(c)


def first_row(model, case: str) -> dict:
    cal = np.load(os.path.join(ZOO, case, "calib.npz"))
    feed = {}
    for inp in model.inputs:
        key = next(f"input:{k}" for k in inp.get_names() if f"input:{k}" in cal.files)
        feed[inp.get_any_name()] = np.ascontiguousarray(cal[key][0])
    return feed


def timed(models: dict, feed: dict, budget: float = 1.5, rounds: int = 7) -> dict:
    import openvino as ov

    core = ov.Core()
    cms = {k: core.compile_model(m, "CPU", CFG) for k, m in models.items()}
    reqs = {k: c.create_infer_request() for k, c in cms.items()}
    one = 0.0
    for r in reqs.values():
        r.infer(feed)                  # the feed stays in the input tensors: timed calls pass none
        t0 = time.perf_counter()
        r.infer()
        one += time.perf_counter() - t0
    n = max(1, int(budget * len(models) / (rounds * one)))
    t = {k: [] for k in reqs}
    for _ in range(rounds):
        for k, r in reqs.items():
            t0 = time.perf_counter()
            for _ in range(n):
                r.infer()
            t[k].append((time.perf_counter() - t0) / n)
    return {"times": t, "primitives": {k: primitives(c) for k, c in cms.items() if k != "fp32"}}


def speed(t: dict, k: str) -> dict:
    r = np.array(t["fp32"]) / np.array(t[k])
    return {"median": round(float(np.median(r)), 3), "min": round(float(r.min()), 3), "max": round(float(r.max()), 3),
            "ms": round(1000 * float(np.median(t[k])), 3)}


def worker(case: str, requantize: str) -> dict:
    import openvino as ov

    core = ov.Core()
    fp32 = core.read_model(os.path.join(ZOO, case, "model.xml"))
    models = {"fp32": fp32}
    for tool in ("ovquant", "nncf"):
        p = os.path.join(ZOO, "runs", case, f"{tool}.xml")
        if not os.path.exists(p):
            raise SystemExit(f"{p} is missing: run python benchmarks/zoo/run.py --case {case} first")
        models[tool] = core.read_model(p)
    feed = first_row(fp32, case)
    res = timed(models, feed)
    out = {"case": case, "isa": host_isa(), "fp32_ms": round(1000 * float(np.median(res["times"]["fp32"])), 3),
           **{f"{k}_speed": speed(res["times"], k) for k in models if k != "fp32"},
           "int8_primitives": res["primitives"].get("ovquant")}
    slow = out.get("ovquant_speed", {}).get("median", 2) < 1.0
    if requantize == "all" or (requantize == "auto" and slow):
        out["requantized"] = requantized(case, fp32, feed)
    return out


def requantized(case: str, fp32, feed: dict) -> dict:
    import ovquant
    sys.path.insert(0, os.path.dirname(HERE))
    from benchmarks.zoo.cases import CASES

    cal = np.load(os.path.join(ZOO, case, "calib.npz"))
    keys = {inp.get_any_name(): next(f"input:{k}" for k in inp.get_names() if f"input:{k}" in cal.files)
            for inp in fp32.inputs}
    rows = [{k: cal[v][i] for k, v in keys.items()} for i in range(len(cal[next(iter(keys.values()))]))]
    kw = {"model_type": CASES[case]["model_type"]} if CASES[case].get("model_type") else {}
    t0 = time.perf_counter()
    q, rep = ovquant.quantize_with_report(fp32, rows, **kw)
    secs = time.perf_counter() - t0
    e = next(a for a in rep["algorithms"] if a["name"] == "SlowInt8Check")
    full = ovquant.quantize(fp32, rows, skip_slow_int8=False, **kw)
    res = timed({"fp32": fp32, "full": full, "result": q}, feed)
    return {"quantize_s": round(secs, 2), "check_s": e["seconds"], "kept_in_float": e["kept_in_float"],
            "n_kept_in_float": e["n_kept_in_float"], "check_summary": e["summary"],
            "full_speed": speed(res["times"], "full"), "result_speed": speed(res["times"], "result")}


def _speed(d: Optional[dict]) -> str:
    return f"{d['median']:.2f} ({d['min']:.2f}-{d['max']:.2f})" if d else "-"


def table(rows: list) -> str:
    """The markdown table of the JSON lines (one row per case and ISA; the last line of a case and ISA wins)."""
    last = {(r["case"], r["isa"]): r for r in rows}
    out = ["| case | ISA | FP32 ms | ovquant INT8 speed (min-max) | NNCF INT8 speed (min-max) | ovquant's int8 primitives "
           "| default quantized again in that process (SlowInt8Check) |", "|---|---|---|---|---|---|---|"]
    for (case, isa), r in last.items():
        if "error" in r:
            out.append(f"| {case} | {isa} | error: {r['error']} | | | | |")
            continue
        prims = ", ".join(sorted({k.split("/")[-1] for k in (r.get("int8_primitives") or {})
                                  if k.split("/")[1] in ("u8", "i8")})) or "none (float)"
        q = r.get("requantized")
        again = "" if not q else (
            f"kept {q['n_kept_in_float']} in float ({', '.join(q['kept_in_float']) or '-'}); result "
            f"{_speed(q['result_speed'])} vs full {_speed(q['full_speed'])}; check {q['check_s']:.2f} s of "
            f"{q['quantize_s']:.2f} s")
        out.append(f"| {case} | {isa} | {r['fp32_ms']:.2f} | {_speed(r.get('ovquant_speed'))} | "
                   f"{_speed(r.get('nncf_speed'))} | {prims} | {again} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=None)
    ap.add_argument("--isa", default="native,AVX2")
    ap.add_argument("--requantize", default="auto", choices=["auto", "all", "none"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--table", default=None, help="print the markdown table of a .jsonl written by --out")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.table:
        print(table(read_lines(a.table)))
        return 0
    if a.worker:
        print(json.dumps(worker(a.worker, a.requantize)), flush=True)
        return 0
    sys.path.insert(0, os.path.dirname(HERE))
    from benchmarks.zoo.cases import CASES

    cases = a.cases.split(",") if a.cases else [c for c in CASES if os.path.exists(os.path.join(ZOO, c, "model.xml"))]
    for case in cases:
        for isa in a.isa.split(","):
            emit(isa_worker(__file__, case, isa, ["--requantize", a.requantize]), a.out)
    return 0


def isa_worker(script: str, case: str, isa: str, extra: list) -> str:
    """The JSON line of ``script --worker case *extra`` run in a process of its own, with oneDNN capped at
    ``isa`` (``native``: not capped); a failed worker's line says its exit code and last message."""
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa != "native":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    p = subprocess.run([sys.executable, os.path.abspath(script), "--worker", case, *extra], capture_output=True,
                       text=True, env=env)
    if p.returncode == 0 and p.stdout.strip():
        return p.stdout.strip().splitlines()[-1]
    return json.dumps({"case": case, "isa": isa if isa != "native" else host_isa(), "error": f"exit {p.returncode}: "
                       + (p.stderr.strip().splitlines() or ["(no message)"])[-1][:300]})


def read_lines(path: str) -> list:
    """The JSON lines of a ``--out`` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
