"""The zoo's markdown table and its section of docs/benchmarks.md (between markers, so reruns replace it)."""
import re

BEGIN = "<!-- zoo-table:begin (written by benchmarks/zoo/run.py; do not edit by hand) -->"
END = "<!-- zoo-table:end -->"
TOOLS = ("ovquant", "ovquant-mixed", "ovquant-file", "nncf")


def _f(v, nd=4, pct=False):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v * 100:.2f}%" if pct else f"{v:.{nd}f}"


def _metric(case, v):
    if v is None:
        return "-"
    if case["primary"] in ("line_acc", "top1", "box_f1"):
        return _f(v, pct=True)
    if case["primary"] == "nme":
        return f"{v * 100:.3f}%"
    return _f(v)


def verdict(case: dict):
    """'ok' when ovquant's default (performance preset, no options) is at least NNCF's default by the case's
    primary metric, 'worse' when below it, None when either is missing. Compared on values rounded to 6 digits."""
    t = case.get("tools", {})
    a = (t.get("ovquant") or {}).get("metrics", {}).get(case["primary"])
    b = (t.get("nncf") or {}).get("metrics", {}).get(case["primary"])
    if a is None or b is None:
        return None
    a, b = round(a, 6), round(b, 6)
    return "ok" if (a >= b if case["higher_better"] else a <= b) else "worse"


def render(results: dict) -> str:
    """Markdown of the run's results ({"host": {...}, "cases": {name: case result}})."""
    h = results.get("host", {})
    cases = results.get("cases", {})
    lines = [f"Host: {h.get('cpu', '?')}, {h.get('nproc', '?')} cores, ISA **{h.get('isa', '?')}** "
             f"(avx512_vnni: {h.get('avx512_vnni')}, amx_int8: {h.get('amx_int8')}), openvino {h.get('openvino', '?')}, nncf {h.get('nncf', '?')}, "
             f"run {h.get('date', '?')}, {h.get('run_s', '?')} s for the run.", ""]
    verdicts = {n: verdict(c) for n, c in cases.items()}
    worse = [n for n, v in verdicts.items() if v == "worse"]
    judged = [n for n, v in verdicts.items() if v is not None]
    lines.append(f"**ovquant's default (performance preset, no options) is worse than NNCF's default on "
                 f"{len(worse)} of {len(judged)} cases** (by each case's metric)" + (":" if worse else "."))
    if worse:
        def gap(n):
            c = cases[n]
            a = c["tools"]["ovquant"]["metrics"][c["primary"]]
            b = c["tools"]["nncf"]["metrics"][c["primary"]]
            return (b - a) if c["higher_better"] else (a - b)
        # the worst case: the largest shortfall against NNCF, in the metric's own units (points for rates)
        w = max(worse, key=gap)
        c = cases[w]
        lines.append(f"worst: **{w}** ({c['primary']}): FP32 {_metric(c, c['fp32']['metrics'][c['primary']])}, "
                     f"ovquant {_metric(c, c['tools']['ovquant']['metrics'][c['primary']])}, "
                     f"NNCF {_metric(c, c['tools']['nncf']['metrics'][c['primary']])}. "
                     f"Worse: {', '.join(worse)}.")
    lines += ["", "| case | family | metric | FP32 | tool | metric | change | ovq ≥ NNCF | quantize time ×NNCF | "
              "INT8 latency ×NNCF | peak RSS MB | FQ | int8 compute ops | min output cos | max rel L2 | "
              "rows lost vs FP32 | McNemar p vs NNCF |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, c in cases.items():
        fpm = c["fp32"]["metrics"].get(c["primary"])
        first = True
        for tool in TOOLS:
            r = c.get("tools", {}).get(tool)
            if r is None:
                continue
            head = [n, c["family"], c["primary"] + (" ↑" if c["higher_better"] else " ↓"), _metric(c, fpm)] if first \
                else ["", "", "", ""]
            first = False
            if r.get("error"):
                lines.append("| " + " | ".join(head + [tool, "**failed**: " + r["error"][:160].replace("|", "/")] +
                                                 [""] * 11) + " |")
                continue
            v = r["metrics"].get(c["primary"])
            ch = None if v is None or fpm is None else v - fpm
            chs = "-" if ch is None else (f"{ch * 100:+.2f} pt" if c["primary"] in ("line_acc", "top1", "box_f1")
                                          else f"{ch * 100:+.3f} pt" if c["primary"] == "nme" else f"{ch:+.4f}")
            vd = {"ok": "yes", "worse": "**no**"}.get(verdict(c), "-") if tool == "ovquant" else ""
            outs = r.get("outputs") or []
            cells = [tool, _metric(c, v), chs, vd, _f(r.get("quantize_x_nncf"), 2), _f(r.get("latency_x_nncf"), 2),
                     _f(r.get("peak_rss_mb"), 0), str(r.get("n_fq", "-")),
                     f"{r['int8_ops']}/{r['compute_ops']}" if r.get("compute_ops") is not None else "-",
                     _f(min(o["cos_mean"] for o in outs), 5) if outs else "-",
                     _f(max(o["rel_l2_mean"] for o in outs), 4) if outs else "-",
                     str(r["rows_lost"]) if r.get("rows_lost") is not None else "-",
                     _f(r.get("mcnemar_p_vs_nncf"), 3)]
            lines.append("| " + " | ".join(head + cells) + " |")
    return "\n".join(lines) + "\n"


def replace_section(text: str, body: str) -> str:
    """``text`` with the part between the markers replaced by ``body`` (markers appended when absent)."""
    block = f"{BEGIN}\n{body}{END}"
    if BEGIN in text and END in text:
        return re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, count=1, flags=re.S)
    return text.rstrip("\n") + "\n\n" + block + "\n"
