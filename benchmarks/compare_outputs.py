#!/usr/bin/env python3
"""Byte-for-byte output check: quantize a fixed set of models with fixed data under fixed configs and
record the SHA-256 of every output .xml and .bin (and of the run report without its timings).

    python benchmarks/compare_outputs.py [--out FILE.json] [--check BASELINE.json] [--only NAME,...]
                                         [--no-bench] [--data DIR] [--work DIR]

Models:

* ``demo``: the shipped demo CNN (core/data/demo_cnn.xml) on the first 300 images of demo_data.npz;
* tiny models of tests/models.py on 16 seeded random samples: ``conv_net`` (a depthwise CNN),
  ``residual_net`` (Concat: unified scales), ``aca_net`` (a pair ActivationChannelAlignment aligns),
  ``fc_net``, ``strided_net``, ``outlier_conv_net``, ``matmul_net`` and ``encoder_net`` (a BERT-style
  Transformer layer);
* the benchmark set's ``imagenet-lite0``, ``minilm`` and ``fashion-cnn`` (300 calibration rows) from
  ``--data`` (default ``$OVQ_BENCH_DIR``, ``~/.cache/ovquant-bench`` or ``~/.cache/ovquant-zoo``, the first
  that holds them); a case that is not there is skipped with a note (it is then missing from the JSON,
  and ``--check`` reports it as not compared, not as a difference).

Configs (keyword overrides of ``ovquant.api.quantize_with_report``, see CONFIGS): default performance,
mixed, use_layerwise_tuning, first_layer_rounding, quantile range estimators, the mean_blob and exact
bias-correction forms; for Transformers model_type transformer (SmoothQuant on) with and without
SmoothQuant and with another alpha. Outputs are saved with ``compress_to_fp16=False``.

``--check FILE`` compares this run with an earlier one and exits with status 1 on any difference of an
entry both runs have (status 0 otherwise). Quantization is deterministic: the same code gives the same
bytes on the same machine (OpenVINO and numpy versions are recorded in the JSON), with SlowInt8Check's
timing off (``OVQUANT_SKIP_SLOW_INT8=false`` unless the environment sets it: with it, two runs of the same
code differed on 4 of 56 entries on 2026-12-07). Each model runs in a
process of its own, its configs in MATRIX order: OpenVINO numbers the names of unnamed ops per process,
so a model's hashes then do not depend on the models run before it.

To check a change: run it with ``--out`` on the code before the change, then with ``--check`` after it.
"""
import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings

# SlowInt8Check times INT8 against FP32 on the host and may keep FP32 where the two are close (the tiny
# models here often are), so the bytes would depend on the machine's load: the timing is off for every
# model process (set OVQUANT_SKIP_SLOW_INT8 to something else to compare with it)
os.environ.setdefault("OVQUANT_SKIP_SLOW_INT8", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

BENCH_CASES = ("imagenet-lite0", "minilm", "fashion-cnn")
TINY = ("conv_net", "residual_net", "aca_net", "fc_net", "strided_net", "outlier_conv_net", "matmul_net",
        "encoder_net")
TRANSFORMERS = {"encoder_net", "minilm"}

#: config name -> keyword overrides
CONFIGS = {
    "performance": {"preset": "performance"},
    "mixed": {"preset": "mixed"},
    "layerwise": {"preset": "performance", "use_layerwise_tuning": True},
    "first_layer_rounding": {"preset": "performance", "first_layer_rounding": True},
    "quantile": {"preset": "performance", "range_estimator": {"preset": "quantile"}},
    "mean_blob": {"preset": "performance", "bias_correction_form": "mean_blob"},
    "exact": {"preset": "performance", "bias_correction_form": "exact"},
    # Transformers: model_type transformer turns SmoothQuant on
    "transformer": {"preset": "performance", "model_type": "transformer"},
    "transformer_mixed": {"preset": "mixed", "model_type": "transformer"},
    "transformer_no_smooth_quant": {"preset": "performance", "model_type": "transformer", "use_smooth_quant": False},
    "transformer_alpha_0.5": {"preset": "performance", "model_type": "transformer", "smooth_quant_alpha": 0.5},
    "transformer_layerwise": {"preset": "performance", "model_type": "transformer", "use_layerwise_tuning": True},
}
CNN_CONFIGS = ("performance", "mixed", "layerwise", "first_layer_rounding", "quantile", "mean_blob", "exact")
TRANSFORMER_CONFIGS = ("transformer", "transformer_mixed", "transformer_no_smooth_quant", "transformer_alpha_0.5",
                       "transformer_layerwise", "performance")
#: what each model runs (the bench cases a smaller matrix: they take seconds to minutes each)
MATRIX = {
    "demo": CNN_CONFIGS,
    "conv_net": CNN_CONFIGS,
    "residual_net": ("performance", "mixed", "layerwise", "quantile"),
    "aca_net": CNN_CONFIGS,
    "fc_net": ("performance", "mixed", "layerwise", "mean_blob"),
    "strided_net": ("performance", "layerwise", "first_layer_rounding", "exact", "mean_blob"),
    "outlier_conv_net": ("performance", "layerwise", "first_layer_rounding"),
    "matmul_net": ("performance", "mixed"),
    "encoder_net": TRANSFORMER_CONFIGS,
    "imagenet-lite0": ("performance", "mixed", "layerwise", "first_layer_rounding"),
    "fashion-cnn": ("performance", "mixed", "layerwise", "first_layer_rounding"),
    "minilm": ("transformer", "transformer_mixed", "transformer_layerwise"),
}


def bench_dir(explicit=None):
    """The first folder holding the benchmark cases (each with model.xml and calib.npz), or None."""
    home = os.path.expanduser("~")
    for d in (explicit, os.environ.get("OVQ_BENCH_DIR"), os.path.join(home, ".cache", "ovquant-bench"),
              os.path.join(home, ".cache", "ovquant-zoo")):
        if d and any(os.path.isfile(os.path.join(d, c, "calib.npz")) for c in BENCH_CASES):
            return d
    return None


def load_model(name, data_dir):
    """(openvino.Model, calibration data) of model ``name``, or None when it is not available."""
    import numpy as np
    import openvino as ov

    if name == "demo":
        d = os.path.join(REPO, "core", "data")
        model = ov.Core().read_model(os.path.join(d, "demo_cnn.xml"))
        with np.load(os.path.join(d, "demo_data.npz")) as npz:
            images = npz["images"][:300].astype(np.float32)[:, None] / 255.0
            images = ((images - float(npz["mean"])) / float(npz["std"])).astype(np.float32)
        return model, list(images[:, None])
    if name in TINY:
        import models

        model = getattr(models, name)()
        return model, models.random_samples(model, 16, seed=1)
    if data_dir is None or not os.path.isfile(os.path.join(data_dir, name, "calib.npz")):
        return None
    from bench_data import calib_rows

    model = ov.Core().read_model(os.path.join(data_dir, name, "model.xml"))
    return model, calib_rows(model.inputs, os.path.join(data_dir, name, "calib.npz"), 300)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _untimed(obj):
    """The report without what changes from run to run (times)."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if "seconds" not in k and not k.endswith("_s")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def run_one(model, data, overrides, work, tag):
    import openvino as ov
    from ovquant.api import quantize_with_report

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q, report = quantize_with_report(model, data, **overrides)
    secs = time.perf_counter() - t0
    xml = os.path.join(work, f"{tag}.xml")
    ov.save_model(q, xml, compress_to_fp16=False)
    rep = json.dumps(_untimed(report), sort_keys=True, default=str).encode()
    return {"xml": sha256(xml), "bin": sha256(xml[:-4] + ".bin"), "report": hashlib.sha256(rep).hexdigest(),
            "n_fake_quantize": sum(o.get_type_name() == "FakeQuantize" for o in q.get_ordered_ops()),
            "seconds": round(secs, 2)}


def run_model(name: str, data_dir, work: str) -> dict:
    """``{"results": {...}, "skipped": {...}}`` of model ``name`` under each config of its MATRIX row."""
    out = {"results": {}, "skipped": {}}
    loaded = load_model(name, data_dir)
    if loaded is None:
        out["skipped"][name] = "benchmark case not found (run /work/shared/bench/prepare or set OVQ_BENCH_DIR)"
        print(f"{name}: skipped: {out['skipped'][name]}", file=sys.stderr, flush=True)
        return out
    model, data = loaded
    for cfg in MATRIX[name]:
        key = f"{name}/{cfg}"
        res = run_one(model, data, CONFIGS[cfg], work, key.replace("/", "__"))
        out["results"][key] = res
        print(f"{key}: xml {res['xml'][:12]} bin {res['bin'][:12]} report {res['report'][:12]} "
              f"({res['n_fake_quantize']} FQ, {res['seconds']} s)", file=sys.stderr, flush=True)
    return out


def _commit() -> str:
    """The checked-out commit of the repository the script runs from (``+`` when core/ or plugins/ have
    uncommitted changes)."""
    import subprocess

    def git(*a):
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+" if git("status", "--porcelain", "--", "core", "plugins") else "")


def run(args) -> dict:
    """Every model in a process of its own (OpenVINO numbers unnamed ops per process), so that a model's
    hashes do not depend on which models ran before it (``--only`` gives the same hashes as a full run)."""
    import subprocess

    import numpy as np
    import openvino as ov

    data_dir = bench_dir(args.data)
    names = ["demo", *TINY] + ([] if args.no_bench else list(BENCH_CASES))
    if args.only:
        names = [n for n in names if n in set(args.only.split(","))]
    work = args.work or tempfile.mkdtemp(prefix="ovquant-compare-")
    os.makedirs(work, exist_ok=True)
    out = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(), "commit": _commit(),
                    "python": platform.python_version(), "openvino": ov.__version__, "numpy": np.__version__,
                    "bench_dir": data_dir}, "results": {}, "skipped": {}}
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--model", name, "--work", work]
        p = subprocess.run(cmd + (["--data", data_dir] if data_dir else []), stdout=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{name}: the quantization process failed (exit code {p.returncode})")
        part = json.loads(p.stdout)
        out["results"].update(part["results"])
        out["skipped"].update(part["skipped"])
    return out


def compare(new: dict, old: dict) -> list:
    """Lines describing every difference of an entry both runs hold."""
    diffs = []
    for key, res in new["results"].items():
        ref = old["results"].get(key)
        if ref is None:
            continue
        for field in ("xml", "bin", "report"):
            if field in ref and ref[field] != res[field]:
                diffs.append(f"{key}: {field} differs ({ref[field][:12]} -> {res[field][:12]})")
    return diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the hashes to this JSON file")
    ap.add_argument("--check", default=None, help="compare against this earlier JSON; exit 1 on a difference")
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--no-bench", action="store_true", help="skip the benchmark cases")
    ap.add_argument("--data", default=None, help="folder of the benchmark cases")
    ap.add_argument("--work", default=None, help="folder for the output IRs (default: a temporary one)")
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)   # internal: one model, JSON on stdout
    args = ap.parse_args()
    if args.model:
        print(json.dumps(run_model(args.model, args.data, args.work or tempfile.mkdtemp())))
        return 0
    res = run(args)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)
            f.write("\n")
    if not args.check:
        return 0
    with open(args.check) as f:
        old = json.load(f)
    diffs = compare(res, old)
    only_new = sorted(set(res["results"]) - set(old["results"]))
    only_old = sorted(set(old["results"]) - set(res["results"]))
    same = len(set(res["results"]) & set(old["results"])) - len({d.split(":")[0] for d in diffs})
    print(f"compared {same + len({d.split(':')[0] for d in diffs})} entries: {same} identical, "
          f"{len({d.split(':')[0] for d in diffs})} different")
    if only_old:
        print(f"not compared: {len(only_old)} entries of {args.check} not run now")
    if only_new:
        print(f"not compared (not in {args.check}): {', '.join(only_new)}")
    for d in diffs:
        print(d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
