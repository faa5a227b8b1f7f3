#!/usr/bin/env python3
"""Run the zoo side by side: ovquant (performance and mixed presets) and NNCF 3.4 (its defaults) on every case.

    python benchmarks/zoo/run.py [--case NAME[,NAME]] [--rounds 10] [--no-docs] [--out benchmarks/results/zoo.json]
    python benchmarks/zoo/run.py --table-only             (rewrite the docs table from the JSON)
    python -m benchmarks.zoo run ...                      (the same)

Per case (``$OVQ_ZOO_DIR/<case>``, built by ``python -m benchmarks.zoo prepare``), each in a process of its own:
``ovquant`` = the FP32 IR with the performance preset and nothing else (ovquant's default), ``ovquant-mixed`` = the
mixed preset, ``ovquant-file`` = the original ONNX/TFLite file given to ovquant as it is (performance preset),
``nncf`` = ``nncf.quantize`` with its defaults in ``$OVQ_ZOO_DIR/venv-nncf``. Every INT8 model and the FP32 model
then run on the evaluation rows (CPU, INFERENCE_PRECISION_HINT=f32); the case's metric, the cosine and relative L2
error of every output, the compute ops that the CPU plugin runs in int8 (exec graph ``runtimePrecision``), and the
interleaved latency of FP32 / ovquant / ovquant-mixed / NNCF (benchmarks/latency.py) are recorded. Labeled cases
also get the rows FP32 gets right that each tool loses and an exact McNemar p against NNCF
(benchmarks/paired.py). Raw results go to ``--out`` (merged per case, so ``--case`` updates one case), the table
to docs/benchmarks.md between its markers.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
if os.path.join(_REPO, "benchmarks") not in sys.path:
    sys.path.insert(0, os.path.join(_REPO, "benchmarks"))

import numpy as np  # noqa: E402

from benchmarks.zoo.cases import CASES, evaluate, load_eval, run_model  # noqa: E402
from benchmarks.zoo.common import log, missing, read_json, write_json, zoo_dir  # noqa: E402
from benchmarks.zoo import table  # noqa: E402

COMPUTE = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm"}
INT8 = {"i8", "u8", "I8", "U8"}


def host_info() -> dict:
    flags, cpu = set(), "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                if line.startswith("model name") and cpu == "?":
                    cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import openvino as ov

    vnni = "avx512_vnni" in flags
    isa = "AMX-INT8 + AVX512-VNNI" if vnni and "amx_int8" in flags else "AVX512-VNNI" if vnni else ("AVX-VNNI" if "avx_vnni" in flags else ("AVX2" if "avx2" in flags else "other"))
    return {"cpu": cpu, "nproc": os.cpu_count(), "isa": isa, "avx512_vnni": vnni, "avx_vnni": "avx_vnni" in flags,
            "amx_int8": "amx_int8" in flags, "openvino": ov.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def int8_ops(xml: str) -> tuple:
    """(compute ops running in int8, compute ops) in the CPU plugin's exec graph of ``xml``."""
    import openvino as ov

    core = ov.Core()
    cm = core.compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    n = k = 0
    for op in cm.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" not in rt or rt["layerType"].astype(str) not in COMPUTE:
            continue
        n += 1
        if "runtimePrecision" in rt and rt["runtimePrecision"].astype(str) in INT8:
            k += 1
    return k, n


def quantize(tool, model, case_dir, out, preset, model_type, nncf_py, timeout=1200) -> dict:
    py = nncf_py if tool == "nncf" else sys.executable
    cmd = [py, os.path.join(_HERE, "quantize_worker.py"), "--tool", tool, "--model", model,
           "--calib", os.path.join(case_dir, "calib.npz"), "--out", out, "--preset", preset]
    if model_type:
        cmd += ["--model-type", model_type]
    env = {**os.environ, "PYTHONPATH": _REPO + os.pathsep + os.environ.get("PYTHONPATH", "")} if tool != "nncf" \
        else {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "command": " ".join(cmd)}
    wall = time.time() - t
    if p.returncode != 0:
        err = [l for l in p.stderr.strip().splitlines() if l.strip()]
        msg = next((l for l in reversed(err) if not l.startswith(" ")), err[-1] if err else f"exit {p.returncode}")
        return {"error": msg.strip()[:400], "exit": p.returncode, "command": " ".join(cmd),
                "stderr_tail": "\n".join(err[-15:])}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["process_s"] = round(wall, 2)
    res["command"] = " ".join(cmd)
    return res


def run_case(name, zoo, nncf_py, work, rounds, spec=None, tools=None, time_repeats=1) -> dict:
    """Quantize, score and time one case; ``tools`` (default: all four) limits the tools run. With
    ``time_repeats`` above 1, ovquant's default and NNCF quantize that many times in all, alternating, and
    their ``quantize_s`` is the median (``quantize_s_runs`` has every run; the models scored are the first)."""
    from latency import measure
    from paired import mcnemar_exact

    spec = spec or CASES[name]
    d = os.path.join(zoo, name)
    if not os.path.isfile(os.path.join(d, "meta.json")):
        raise missing(f"case {name}", f"python -m benchmarks.zoo prepare --case {name}")
    meta = read_json(os.path.join(d, "meta.json"))
    t0 = time.time()
    ev = load_eval(d)
    fp_xml = os.path.join(d, "model.xml")
    ref = run_model(fp_xml, ev)
    fp = evaluate(name, spec, d, ev, ref, ref)
    res = {"case": name, "family": spec["family"], "primary": spec["primary"], "higher_better": spec["higher_better"],
           "labeled": fp["rows_right"] is not None, "licence": meta.get("licence"), "source": meta.get("source"),
           "n_eval": int(len(ref[0])), "fp32": {"metrics": fp["metrics"]}, "tools": {}}
    k, n = int8_ops(fp_xml)
    res["fp32"]["compute_ops"] = n
    mtype = spec.get("model_type")
    src = next((os.path.join(d, f) for f in ("source.onnx", "source.tflite") if os.path.isfile(os.path.join(d, f))), None)
    plan = [("ovquant", fp_xml, "performance", "ovquant"), ("ovquant-mixed", fp_xml, "mixed", "ovquant")]
    if src:
        plan.append(("ovquant-file", src, "performance", "ovquant"))
    plan.append(("nncf", fp_xml, "performance", "nncf"))
    if tools is not None:
        plan = [p for p in plan if p[0] in tools]
    os.makedirs(os.path.join(work, name), exist_ok=True)
    for label, model, preset, tool in plan:
        out = os.path.join(work, name, label + ".xml")
        log(f"{name}: {label} quantizing")
        r = quantize(tool, model, d, out, preset, mtype, nncf_py)
        if "error" not in r:
            try:
                o = run_model(out, ev)
                e = evaluate(name, spec, d, ev, o, ref)
                r.update(metrics=e["metrics"], outputs=e["outputs"], rows_right=e["rows_right"])
                r["int8_ops"], r["compute_ops"] = int8_ops(out)
                r["xml"] = out
                del o
            except Exception as exc:   # a quantized model that does not run or score is a failure of that tool
                r = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}", **r}
        log(f"{name}: {label} " + (f"FAILED: {r['error']}" if "error" in r else
                                   f"{spec['primary']}={r['metrics'][spec['primary']]:.4f} q={r['quantize_s']:.1f}s"))
        res["tools"][label] = r
    timed = [p for p in plan if p[0] in ("ovquant", "nncf") and "error" not in res["tools"].get(p[0], {"error": 1})]
    for _ in range(time_repeats - 1):
        for label, model, preset, tool in timed:
            r = quantize(tool, model, d, os.path.join(work, name, label + ".again.xml"), preset, mtype, nncf_py)
            if "error" not in r:
                res["tools"][label].setdefault("quantize_s_runs", [res["tools"][label]["quantize_s"]]).append(r["quantize_s"])
    for label, *_ in timed:
        runs = res["tools"][label].get("quantize_s_runs")
        if runs:
            res["tools"][label]["quantize_s"] = float(np.median(runs))
            log(f"{name}: {label} quantize s over {len(runs)} runs {runs}, median {np.median(runs):.2f}")
    good = [l for l in ("ovquant", "ovquant-mixed", "nncf") if "error" not in res["tools"].get(l, {"error": 1})]
    if good:
        lat = measure([fp_xml] + [res["tools"][l]["xml"] for l in good], ["fp32"] + good, name, zoo,
                      rounds=rounds, iters=0, warmup=10)
        res["latency_ms"] = lat["median_ms"]
        res["latency"] = {k: v for k, v in lat.items() if k != "models"}
    nn = res["tools"].get("nncf", {})
    fp_right = np.array(fp["rows_right"]) if fp["rows_right"] is not None else None
    for label, r in res["tools"].items():
        if "error" in r:
            continue
        if "error" not in nn:
            r["quantize_x_nncf"] = r["quantize_s"] / nn["quantize_s"] if nn.get("quantize_s") else None
            lm = res.get("latency_ms", {})
            r["latency_x_nncf"] = lm[label] / lm["nncf"] if label in lm and "nncf" in lm else None
        if fp_right is not None and r.get("rows_right") is not None:
            right = np.array(r["rows_right"])
            r["rows_lost"] = int((fp_right & ~right).sum())
            r["rows_gained"] = int((~fp_right & right).sum())
            if "error" not in nn and label != "nncf":
                nr = np.array(nn["rows_right"])
                a_only, b_only = int((right & ~nr).sum()), int((nr & ~right).sum())
                r["vs_nncf"] = {"only_this_right": a_only, "only_nncf_right": b_only}
                r["mcnemar_p_vs_nncf"] = mcnemar_exact(a_only, b_only)
    for r in res["tools"].values():
        r.pop("rows_right", None)
    res["verdict_default_vs_nncf"] = table.verdict(res)
    res["case_s"] = round(time.time() - t0, 1)
    log(f"{name}: done in {res['case_s']} s, ovquant default vs NNCF: {res['verdict_default_vs_nncf']}")
    return res


def _write_docs(path, md):
    text = open(path, encoding="utf-8").read() if os.path.isfile(path) else "# Benchmarks\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(table.replace_section(text, md))
    log(f"table written to {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default=None, help="comma-separated case names (default: every built case)")
    ap.add_argument("--rounds", type=int, default=10, help="latency rounds (benchmarks/latency.py)")
    ap.add_argument("--out", default=os.path.join(_REPO, "benchmarks", "results", "zoo.json"))
    ap.add_argument("--docs", default=os.path.join(_REPO, "docs", "benchmarks.md"))
    ap.add_argument("--no-docs", action="store_true", help="do not write the table into docs/benchmarks.md")
    ap.add_argument("--table-only", action="store_true", help="rewrite the docs table from --out, run nothing")
    ap.add_argument("--work", default=None, help="where the INT8 models go (default $OVQ_ZOO_DIR/runs)")
    ap.add_argument("--time-repeats", type=int, default=3,
                    help="quantize runs of ovquant's default and NNCF, alternating; quantize time = median (default 3)")
    a = ap.parse_args(argv)
    if a.table_only:
        _write_docs(a.docs, table.render(read_json(a.out)))
        return 0
    zoo = zoo_dir()
    nncf_py = os.path.join(zoo, "venv-nncf", "bin", "python")
    if not os.path.isfile(nncf_py):
        raise missing("the NNCF venv", "python -m benchmarks.zoo prepare")
    names = a.case.split(",") if a.case else [n for n in CASES if os.path.isfile(os.path.join(zoo, n, "meta.json"))]
    bad = [n for n in names if n not in CASES]
    if bad:
        print(f"unknown case {bad[0]!r} (see python -m benchmarks.zoo list)", file=sys.stderr)
        return 2
    if not names:
        raise missing("the zoo", "python -m benchmarks.zoo prepare")
    work = a.work or os.path.join(zoo, "runs")
    t0 = time.time()
    host = host_info()
    host["nncf"] = subprocess.run([nncf_py, "-c", "import nncf; print(nncf.__version__)"], capture_output=True,
                                  text=True, env={**os.environ, "NNCF_CI": "1"}).stdout.strip() or "?"
    log(f"host {host['cpu']} ({host['isa']}), {len(names)} cases")
    old = read_json(a.out) if os.path.isfile(a.out) else {"cases": {}}
    results = {"host": host, "cases": dict(old.get("cases", {}))}
    for n in names:
        results["cases"][n] = run_case(n, zoo, nncf_py, work, a.rounds, time_repeats=a.time_repeats)
        write_json(a.out, results)
    host["run_s"] = round(time.time() - t0)
    host["cases_run"] = names
    results["cases"] = {k: results["cases"][k] for k in CASES if k in results["cases"]}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    write_json(a.out, results)
    md = table.render(results)
    print(md)
    if not a.no_docs:
        _write_docs(a.docs, md)
    log(f"run done in {host['run_s']} s -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
