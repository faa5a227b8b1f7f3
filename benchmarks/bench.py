#!/usr/bin/env python3
"""Side-by-side benchmark of ovquant and NNCF on the benchmark set (see the set's README).

    python benchmarks/bench.py [--setting minmax|default[,...]] [--cases imagenet-lite0,minilm,fashion-cnn]
                               [--preset performance|mixed] [--repeats 1] [--data DIR] [--bench-dir DIR]
                               [--work DIR] [--doc docs/benchmarks.md] [--results benchmarks/results]
                               [--latency-rounds 30] [--latency-iters 0] [--threads 0] [--no-doc]

Settings:
  minmax   ovquant ``--pipeline MinMaxQuantization``  vs  NNCF ``--bias-correction none``
  default  ovquant defaults (the registered default algorithm)  vs  NNCF defaults (fast bias correction)

For each case and setting, in ONE run: nncf_reference.py and run_ovquant.py run as subprocesses of the
benchmark venv's python (their order alternates across ``--repeats``; the median quantize time is
reported, with the ratio ovquant/NNCF), both INT8 IRs are scored with evaluate.py (classifiers also row by
row with paired.py: the rows each tool gets right or wrong against the labels and FP32, exact McNemar
test), and latency.py measures ovquant INT8, NNCF INT8 and FP32 interleaved. .bin sizes and peak RSS come from the same run. The table
goes to a section of ``--doc`` (replaced when the setting is run again) and the raw JSON to
``--results/<setting>-<date>.json``. The bench dir (with nncf_reference.py and evaluate.py) is found in
$OVQ_BENCH_SCRIPTS, /work/shared/bench or the data DIR.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_data import default_dir, find_bench_scripts  # noqa: E402
CASES = ("imagenet-lite0", "minilm", "fashion-cnn")
SETTINGS = {
    "minmax": {"ovquant": ["--pipeline", "MinMaxQuantization"], "nncf": ["--bias-correction", "none"],
               "title": "MinMaxQuantization only (ovquant `--pipeline MinMaxQuantization` vs NNCF "
                        "`--bias-correction none`)"},
    "default": {"ovquant": [], "nncf": [],
                "title": "Defaults (ovquant's default algorithm vs NNCF defaults: fast bias correction)"},
}


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def run_json(cmd, env=None, log=None):
    """Run ``cmd``; return (its last JSON line, wall seconds). Raise with stderr on failure."""
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if log is not None:
        log.write(f"$ {' '.join(cmd)}\n{p.stdout}{p.stderr}\n")
        log.flush()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    try:
        return last_json(p.stdout), wall
    except ValueError:
        raise RuntimeError(f"{' '.join(cmd)}: no JSON output:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}") from None


def machine_info(py):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    code = ("import json, openvino, nncf; import ovquant\n"
            "print(json.dumps({'openvino': openvino.__version__, 'nncf': nncf.__version__, "
            "'ovquant': getattr(ovquant, '__version__', None), 'ovquant_path': ovquant.__file__}))")
    vers = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError):
        total = None
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gb": round(total, 1) if total else None,
            "kernel": platform.release(), **vers}


def git_info():
    def git(*a):
        try:
            return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True, check=True).stdout.strip()
        except Exception:
            return None
    dirty = git("status", "--porcelain", "core", "plugins")
    h = hashlib.sha1((git("diff", "HEAD", "--", "core", "plugins") or "").encode())
    for line in (dirty.splitlines() if dirty else []):
        if line.startswith("??"):
            path = os.path.join(REPO, line[3:])
            for root, _, files in (os.walk(path) if os.path.isdir(path) else [(os.path.dirname(path), [], [os.path.basename(path)])]):
                for f in sorted(files):
                    try:
                        h.update(open(os.path.join(root, f), "rb").read())
                    except OSError:
                        pass
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty_files": dirty.splitlines() if dirty else [],
            "dirty_sha1": h.hexdigest()[:12] if dirty else None}


def describe_git(g):
    text = f"{g['commit']}" + (f" + {len(g['dirty_files'])} uncommitted core/plugins file(s) (diff {g['dirty_sha1']})"
                               if g["dirty_files"] else "")
    if g.get("changed_during_run"):
        end = g["at_end"]
        text += (f" (the tree changed during the run: at the end {end['commit']}"
                 + (f" + {len(end['dirty_files'])} uncommitted" if end["dirty_files"] else "") + ")")
    return text


def default_algorithm(py):
    code = ("import json\nfrom ovquant.api import default_algorithm\n"
            "try:\n    print(json.dumps({'name': default_algorithm()}))\n"
            "except Exception as e:\n    print(json.dumps({'error': str(e)}))")
    p = subprocess.run([py, "-c", code], capture_output=True, text=True)
    try:
        return last_json(p.stdout)
    except ValueError:
        return {"error": p.stderr.strip()[-500:]}


def bin_mb(xml):
    return os.path.getsize(os.path.splitext(xml)[0] + ".bin") / 2 ** 20


def med(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def bench_case(case, setting, a, py, scripts, work, log):
    spec = SETTINGS[setting]
    out_dir = os.path.join(work, setting, case)
    os.makedirs(out_dir, exist_ok=True)
    env = {**os.environ, "NNCF_CI": "1"}
    xml = {"nncf": os.path.join(out_dir, "nncf.xml"), "ovquant": os.path.join(out_dir, "ovquant.xml")}
    common = ["--case", case, "--data", a.data, "--preset", a.preset, "--subset-size", str(a.subset_size)]
    cmds = {"nncf": [py, os.path.join(scripts, "nncf_reference.py"), *common, "--out", xml["nncf"], *spec["nncf"]],
            "ovquant": [py, os.path.join(HERE, "run_ovquant.py"), *common, "--out", xml["ovquant"], *spec["ovquant"]]}
    runs = {"nncf": [], "ovquant": []}
    for r in range(a.repeats):
        order = ("nncf", "ovquant") if r % 2 == 0 else ("ovquant", "nncf")
        for tool in order:
            print(f"[{setting}] {case}: repeat {r + 1}/{a.repeats} {tool} ...", file=sys.stderr, flush=True)
            res, wall = run_json(cmds[tool], env, log)
            res["process_wall_s"] = round(wall, 2)
            res["repeat"] = r
            runs[tool].append(res)
    evals = {}
    for tool in ("nncf", "ovquant"):
        print(f"[{setting}] {case}: evaluate {tool} ...", file=sys.stderr, flush=True)
        evals[tool], _ = run_json([py, os.path.join(scripts, "evaluate.py"), "--case", case, "--model", xml[tool],
                                   "--data", a.data], env, log)
    fp32_xml = os.path.join(a.data, case, "model.xml")
    rows = None
    if case != "minilm":   # classifiers: which rows each tool gets right, against labels and FP32
        print(f"[{setting}] {case}: paired rows ...", file=sys.stderr, flush=True)
        rows, _ = run_json([py, os.path.join(HERE, "paired.py"), "--case", case, "--data", a.data,
                            "--bench-dir", scripts, "--models", f"ovquant={xml['ovquant']},nncf={xml['nncf']}"],
                           env, log)
    print(f"[{setting}] {case}: latency ...", file=sys.stderr, flush=True)
    lat, _ = run_json([py, os.path.join(HERE, "latency.py"), xml["ovquant"], xml["nncf"], fp32_xml,
                       "--labels", "ovquant,nncf,fp32", "--case", case, "--data", a.data,
                       "--rounds", str(a.latency_rounds), "--iters", str(a.latency_iters),
                       "--threads", str(a.threads)], env, log)
    summary = {}
    fp32_bin = bin_mb(fp32_xml)
    for tool in ("nncf", "ovquant"):
        rs = runs[tool]
        summary[tool] = {"quantize_s_median": med([x["quantize_s"] for x in rs]),
                         "quantize_s_all": [x["quantize_s"] for x in rs],
                         "process_wall_s_median": med([x["process_wall_s"] for x in rs]),
                         "peak_rss_mb_median": med([x["peak_rss_mb"] for x in rs]),
                         "rss_before_quantize_mb_median": med([x["rss_before_quantize_mb"] for x in rs]),
                         "n_fq": rs[-1]["n_fq"], "n_int8_weight_consts": rs[-1]["n_int8_weight_consts"],
                         "bin_mb": round(bin_mb(xml[tool]), 3), "bin_ratio_to_fp32": round(bin_mb(xml[tool]) / fp32_bin, 4),
                         "latency_ms": lat["median_ms"][tool],
                         "speedup_vs_fp32": lat["speedup"][f"{tool}_vs_fp32"]}
    summary["fp32"] = {"bin_mb": round(fp32_bin, 3), "latency_ms": lat["median_ms"]["fp32"]}
    qn, qo = summary["nncf"]["quantize_s_median"], summary["ovquant"]["quantize_s_median"]
    summary["ratios"] = {"quantize_ovquant_over_nncf": round(qo / qn, 3) if qn else None,
                         "latency_ovquant_over_nncf": lat["ratios"]["ovquant/nncf"],
                         "speedup_ovquant_vs_nncf": lat["speedup"]["ovquant_vs_nncf"],
                         "peak_rss_ovquant_over_nncf": round(summary["ovquant"]["peak_rss_mb_median"]
                                                             / summary["nncf"]["peak_rss_mb_median"], 3)}
    for m in lat["models"]:
        m.pop("req", None)
    return {"case": case, "setting": setting, "runs": runs, "eval": evals, "paired": rows, "latency": lat, "summary": summary,
            "commands": {k: " ".join(v) for k, v in cmds.items()}}


# ---- markdown ------------------------------------------------------------------------------------
def _pct(x):
    return f"{100 * x:.2f}%"


def metric_cell(case, m):
    if case == "minilm":
        return f"Lee Spearman {m['lee_spearman']:.4f}"
    return f"top1 {_pct(m['top1'])}"


def agree_cell(case, ev):
    if ev is None:
        return "(reference)"
    if case == "minilm":
        return f"cos {ev['cos_to_fp32_mean']:.4f} (min {ev['cos_to_fp32_min']:.4f})"
    return _pct(ev["top1_agreement_with_fp32"])


def latency_vs(r):
    """ovquant latency / NNCF latency as a cell: below 1 is faster."""
    word = "same" if round(r, 2) == 1.0 else ("faster" if r < 1 else "slower")
    return f"{r:.2f}x ({word})"


def render_section(setting, res):
    s = SETTINGS[setting]
    key = res.get("key", setting)
    preset = "" if key == setting else f", preset `{res['args']['preset']}`"
    lines = [f"<!-- bench:{key}:begin -->", f"## Setting `{setting}`{preset}: {s['title']}", "",
             f"Run {res['date']} ({res['run_seconds']:.0f} s), preset `{res['args']['preset']}`, subset 300, "
             f"{res['args']['repeats']} repeat(s) per tool (order alternated; quantize time = median), latency "
             f"{res['args']['latency_rounds']} interleaved rounds x {res['args']['latency_iters'] or 'auto (~30 ms)'} sync calls "
             f"(CPU, f32 hint, LATENCY hint, threads {res['args']['threads'] or 'default'}), ovquant "
             f"{describe_git(res['git'])}. "
             f"Raw JSON: `{res['json_path']}`.", ""]
    if res.get("note"):
        lines += [res["note"], ""]
    lines += ["| case | tool | metric | agreement with FP32 (minilm: cosine) | quantize s (x NNCF) | process wall s "
              "| latency ms (speed-up vs FP32) | latency vs NNCF INT8 | .bin MB (x FP32) | peak RSS MB (before quantize) | FQ / int8 weights |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["cases"]:
        case, sm, ev = c["case"], c["summary"], c["eval"]
        fpm = ev["nncf"]["fp32_metrics"]
        lines.append(f"| {case} | FP32 | {metric_cell(case, fpm)} | (reference) | | | {sm['fp32']['latency_ms']:.3g} "
                     f"| | {sm['fp32']['bin_mb']:.2f} | | |")
        for tool, label in (("nncf", "NNCF"), ("ovquant", "ovquant")):
            t = sm[tool]
            q = t["quantize_s_median"]
            ratio = q / sm["nncf"]["quantize_s_median"] if sm["nncf"]["quantize_s_median"] else float("nan")
            vs = "1.00x" if tool == "nncf" else latency_vs(sm["ratios"]["latency_ovquant_over_nncf"])
            lines.append(
                f"| {case} | {label} | {metric_cell(case, ev[tool]['metrics'])} | {agree_cell(case, ev[tool])} "
                f"| {q:.2f} ({ratio:.2f}x) | {t['process_wall_s_median']:.1f} "
                f"| {t['latency_ms']:.3g} ({t['speedup_vs_fp32']:.2f}x) | {vs} "
                f"| {t['bin_mb']:.2f} ({t['bin_ratio_to_fp32']:.2f}x) "
                f"| {t['peak_rss_mb_median']:.0f} ({t['rss_before_quantize_mb_median']:.0f}) "
                f"| {t['n_fq']} / {t['n_int8_weight_consts']} |")
    paired = [paired_line(c["case"], c["paired"]) for c in res["cases"] if c.get("paired")]
    if paired:
        lines += ["", "Row by row (`benchmarks/paired.py`; *lost*: labeled rows FP32 gets right and the INT8 model "
                  "wrong, *gained*: the reverse; p: exact McNemar test of ovquant vs NNCF on the rows where exactly "
                  "one of them is right):", ""] + paired
    lines += ["", f"<!-- bench:{key}:end -->"]
    return "\n".join(lines)


def paired_line(case, p):
    m, (pair,) = p["models"], p["pairs"]
    tools = "; ".join(f"{label} right on {m[t]['correct']}, lost {m[t]['lost']}, gained {m[t]['gained']}"
                      for t, label in (("ovquant", "ovquant"), ("nncf", "NNCF")))
    only = lambda key: (", ".join(f"`{r}`" for r in pair[key + "_rows"]) if f"{key}_rows" in pair  # noqa: E731
                        else str(pair[key]))
    detail = f" (ovquant only: {only('a_only') or 'none'}; NNCF only: {only('b_only') or 'none'})" \
        if "a_only_rows" in pair else ""
    return (f"- {case}: of {p['n_labeled']} labeled rows FP32 is right on {p['fp32']['correct']}; {tools}. "
            f"Rows only one tool gets right: ovquant {pair['a_only']}, NNCF {pair['b_only']}{detail}, "
            f"p = {pair['mcnemar_p']:.2g}.")


HEADER_BEGIN, HEADER_END = "<!-- bench:header:begin -->", "<!-- bench:header:end -->"


def render_header(res):
    m = res["machine"]
    return "\n".join([
        HEADER_BEGIN, "# Benchmarks: ovquant vs NNCF", "",
        f"Last run {res['date']} on {m['nproc']} CPU core(s) ({m['cpu_model']}, {m['mem_gb']} GB RAM, shared and "
        f"noisy), openvino {m['openvino'].split('-')[0]}, nncf {m['nncf']}, ovquant {m['ovquant']}. Produced by "
        "`benchmarks/bench.py` on the public benchmark set (imagenet-lite0: EfficientNet-Lite0; minilm: "
        "all-MiniLM-L6-v2, quantized as a transformer; fashion-cnn: small CNN). Each section comes from ONE run: "
        "every ratio in it (quantize time, latency, .bin size, RSS) compares numbers measured in that same run "
        "on the same machine, never across runs.", "",
        "Columns: *metric* is the task metric on the eval set (imagenet: top-1 on 159 labeled rows, SE about 2.8 "
        "points, so agreement is the sensitive signal; minilm: Spearman of embedding cosine vs human similarity, "
        "Lee 50 docs; fashion-cnn: top-1 on 10,000). *agreement*: share of rows whose INT8 top-1 equals FP32's "
        "(minilm: mean and min cosine of the INT8 embedding to FP32's). *quantize s*: wall time of the quantize call "
        "only (nncf.quantize / ovquant quantize_with_report; reading and saving the model excluded; ovquant's "
        "includes its weight compression), median over repeats; *process wall s*: the "
        "whole subprocess (interpreter, imports, reading, saving). *latency*: median single-sample synchronous "
        "latency, the three models measured interleaved. *.bin*: both INT8 IRs saved with ov.save_model's default "
        "(float constants left in f16), FP32 IR is f32. *peak RSS*: ru_maxrss of the quantizing process (NNCF's "
        "includes importing torch and nncf; the RSS before the quantize call is in parentheses).",
        HEADER_END])


def replace_section(path, key, section, header=None):
    """Put ``section`` (wrapped in ``<!-- bench:KEY:begin/end -->``) into the markdown file ``path``, in
    place of the previous one (else at the end); refresh the header if given. Other text is kept."""
    text = open(path).read() if os.path.exists(path) else ""
    if header is not None:
        if HEADER_BEGIN in text and HEADER_END in text:
            text = re.sub(re.escape(HEADER_BEGIN) + r".*?" + re.escape(HEADER_END), lambda _: header, text, flags=re.S)
        else:
            text = header + "\n\n" + text.lstrip()
    b, e = f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"
    if not section.startswith(b):
        section = f"{b}\n{section.rstrip()}\n\n{e}"
    if b in text and e in text:
        text = re.sub(re.escape(b) + r".*?" + re.escape(e), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text.lstrip().rstrip() + "\n")


def publish(res: dict, out, doc, key: str, render) -> None:
    """What the single-purpose benchmark scripts do with their result: note where the JSON goes (relative
    to the repository), put ``render(res)`` into section ``key`` of the markdown file ``doc``, write the
    JSON to ``out``, and print it as ONE line."""
    if out:
        p = os.path.abspath(out)
        res["json_path"] = os.path.relpath(p, REPO) if p.startswith(REPO + os.sep) else p
    text = json.dumps(res)
    if doc:
        replace_section(doc, key, render(res))
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)


def write_doc(path, res):
    replace_section(path, res.get("key", res["setting"]), render_section(res["setting"], res), render_header(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="minmax", help="comma-separated: " + ", ".join(SETTINGS))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--preset", choices=["performance", "mixed"], default="performance")
    ap.add_argument("--subset-size", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--data", default=default_dir(), help="benchmark data DIR (default: %(default)s)")
    ap.add_argument("--python", default=None, help="python of the benchmark venv (default: DIR/venv/bin/python)")
    ap.add_argument("--bench-dir", default=None, help="folder with nncf_reference.py and evaluate.py")
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "ovquant-bench-out"),
                    help="where the INT8 IRs go (default: %(default)s)")
    ap.add_argument("--doc", default=os.path.join(REPO, "docs", "benchmarks.md"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-doc", action="store_true", help="do not touch --doc")
    ap.add_argument("--latency-rounds", type=int, default=30)
    ap.add_argument("--latency-iters", type=int, default=0, help="0: auto (see latency.py)")
    ap.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS for latency (0: plugin default)")
    a = ap.parse_args()
    a.data = os.path.abspath(a.data)
    py = a.python or os.path.join(a.data, "venv", "bin", "python")
    scripts = find_bench_scripts(a.data, a.bench_dir)
    cases = [c for c in a.cases.split(",") if c]
    settings = [s for s in a.setting.split(",") if s]
    for s in settings:
        if s not in SETTINGS:
            ap.error(f"unknown setting {s!r} (known: {', '.join(SETTINGS)})")
    machine = machine_info(py)
    os.makedirs(a.results, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    for setting in settings:
        note = None
        if setting == "default":
            d = default_algorithm(py)
            if "name" not in d:
                print(f"setting default skipped: ovquant has no default algorithm ({d.get('error')})", file=sys.stderr)
                continue
            note = f"ovquant default algorithm: `{d['name']}`."
        t0 = time.perf_counter()
        date = datetime.datetime.now().strftime("%Y-%m-%d")
        # a preset other than performance gets its own file and doc section (key "<setting>-<preset>")
        key = setting if a.preset == "performance" else f"{setting}-{a.preset}"
        json_path = os.path.join(a.results, f"{key}-{date}.json")
        log_path = os.path.join(a.work, f"{setting}.log")
        results = []
        git = git_info()
        with open(log_path, "w") as log:
            for case in cases:
                results.append(bench_case(case, setting, a, py, scripts, a.work, log))
        git_end = git_info()
        if git_end != git:   # other people edit the tree: say so rather than hide it
            git = {**git, "changed_during_run": True, "at_end": git_end}
        res = {"setting": setting, "key": key, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
               "run_seconds": round(time.perf_counter() - t0, 1), "machine": machine, "git": git,
               "args": vars(a), "note": note, "bench_scripts": scripts, "python": py, "cases": results,
               "json_path": os.path.relpath(json_path, REPO) if json_path.startswith(REPO) else json_path,
               "log": log_path}
        with open(json_path, "w") as f:
            json.dump(res, f, indent=1, default=str)
        if not a.no_doc:
            write_doc(a.doc, res)
        print(json.dumps({"setting": setting, "json": json_path,
                          "summary": {c["case"]: c["summary"] for c in results}}, default=str), flush=True)


if __name__ == "__main__":
    main()
