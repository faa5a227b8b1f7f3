#!/usr/bin/env python3
"""LayerwiseTuning against plain DefaultQuantization and NNCF's defaults, side by side in one run.

    python3 benchmarks/layerwise.py [--cases imagenet-lite0,fashion-cnn] [--repeats 2] [--data DIR]
                                    [--preset performance] [--no-doc]

For each case, ``--repeats`` times (order rotating): ``nncf_reference.py`` (NNCF defaults),
``run_ovquant.py`` (DefaultQuantization) and ``run_ovquant.py --layerwise-tuning``, each in a fresh
process of the benchmark venv (quantize time and peak RSS from the process); then ``evaluate.py`` on each
model. Writes ``benchmarks/results/layerwise-<date>.json`` and the ``layerwise`` section of
docs/benchmarks.md.
"""
import argparse
import datetime
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_data import find_bench_scripts  # noqa: E402
from bench import default_dir, git_info, describe_git, med, replace_section, run_json, REPO  # noqa: E402

TOOLS = ("nncf", "dq", "dq+lwt")


def pct(x):
    return f"{100 * x:.2f}%"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="imagenet-lite0,fashion-cnn")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", default=default_dir())
    ap.add_argument("--preset", choices=["performance", "mixed"], default="performance")
    ap.add_argument("--subset-size", type=int, default=300)
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "ovquant-bench-out", "layerwise"))
    ap.add_argument("--doc", default=os.path.join(REPO, "docs", "benchmarks.md"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-doc", action="store_true")
    a = ap.parse_args()
    py = os.path.join(a.data, "venv", "bin", "python")
    scripts = find_bench_scripts(a.data)
    env = {**os.environ, "NNCF_CI": "1"}
    g0 = git_info()
    res = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "preset": a.preset, "git": g0, "cases": {}}
    os.makedirs(a.work, exist_ok=True)
    log = open(os.path.join(a.work, "layerwise.log"), "w")
    for case in [c for c in a.cases.split(",") if c]:
        xml = {t: os.path.join(a.work, case, t.replace("+", "_") + ".xml") for t in TOOLS}
        common = ["--case", case, "--data", a.data, "--preset", a.preset, "--subset-size", str(a.subset_size)]
        cmds = {"nncf": [py, os.path.join(scripts, "nncf_reference.py"), *common, "--out", xml["nncf"]],
                "dq": [py, os.path.join(HERE, "run_ovquant.py"), *common, "--out", xml["dq"]],
                "dq+lwt": [py, os.path.join(HERE, "run_ovquant.py"), *common, "--out", xml["dq+lwt"],
                           "--layerwise-tuning"]}
        runs = {t: [] for t in TOOLS}
        for r in range(a.repeats):
            for k in range(len(TOOLS)):
                t = TOOLS[(r + k) % len(TOOLS)]
                print(f"[layerwise] {case}: repeat {r + 1}/{a.repeats} {t} ...", file=sys.stderr, flush=True)
                out, wall = run_json(cmds[t], env, log)
                out["process_wall_s"] = round(wall, 2)
                runs[t].append(out)
        evals = {}
        for t in TOOLS:
            print(f"[layerwise] {case}: evaluate {t} ...", file=sys.stderr, flush=True)
            evals[t], _ = run_json([py, os.path.join(scripts, "evaluate.py"), "--case", case, "--model", xml[t],
                                    "--data", a.data], env, log)
        summ = {t: {"quantize_s_median": med([x["quantize_s"] for x in runs[t]]),
                    "quantize_s_all": [x["quantize_s"] for x in runs[t]],
                    "peak_rss_mb_median": med([x["peak_rss_mb"] for x in runs[t]]),
                    "metrics": evals[t]["metrics"],
                    "agreement": evals[t].get("top1_agreement_with_fp32", evals[t].get("cos_to_fp32_mean"))}
                for t in TOOLS}
        summ["fp32_metrics"] = evals["dq"]["fp32_metrics"]
        summ["lwt_time_over_dq"] = round(summ["dq+lwt"]["quantize_s_median"] / summ["dq"]["quantize_s_median"], 3)
        lwt_stage = [s for s in runs["dq+lwt"][-1].get("stages", []) if "LayerwiseTuning" in s.get("algorithms", [])]
        summ["lwt_stage"] = lwt_stage[0] if lwt_stage else None
        res["cases"][case] = {"summary": summ, "runs": runs, "eval": evals,
                              "commands": {k: " ".join(v) for k, v in cmds.items()}}
    res["git_end"] = git_info()
    date = datetime.date.today().isoformat()
    os.makedirs(a.results, exist_ok=True)
    path = os.path.join(a.results, f"layerwise-{date}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    lines = [f"## LayerwiseTuning vs DefaultQuantization vs NNCF ({a.preset})", "",
             f"Run {res['date']}, `benchmarks/layerwise.py --repeats {a.repeats}`, ovquant at {describe_git(g0)}; "
             f"each tool in a fresh process, {a.subset_size} calibration samples, medians of the repeats. "
             f"Raw JSON: `{os.path.relpath(path, REPO)}`.", "",
             "| case | tool | top-1 | agreement with FP32 | quantize s | x DQ time | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for case, c in res["cases"].items():
        s = c["summary"]
        lines.append(f"| {case} | FP32 | {pct(s['fp32_metrics']['top1'])} | | | | |")
        for t in TOOLS:
            v = s[t]
            x = v["quantize_s_median"] / s["dq"]["quantize_s_median"]
            lines.append(f"| {case} | {t} | {pct(v['metrics']['top1'])} | {pct(v['agreement'])} | "
                         f"{v['quantize_s_median']:.2f} | {x:.2f}x | {v['peak_rss_mb_median']:.0f} |")
    text = "\n".join(lines)
    if not a.no_doc:
        replace_section(a.doc, "layerwise", text)
    print(text)
    print(json.dumps({k: v["summary"] for k, v in res["cases"].items()}, default=str)[:4000])


if __name__ == "__main__":
    main()
