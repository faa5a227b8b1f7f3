"""Where the benchmark set lives and how its calibration rows are read (shared by the benchmark scripts)."""
import os


def default_dir() -> str:
    """The ../shared/bench output folder: ``$OVQ_BENCH_DIR`` or ``~/.cache/ovquant-bench``."""
    return os.environ.get("OVQ_BENCH_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ovquant-bench")


def find_bench_scripts(data: str, explicit=None) -> str:
    """The folder with the benchmark set's nncf_reference.py and evaluate.py: ``explicit`` if given, else
    ``$OVQ_BENCH_SCRIPTS``, /work/shared/bench, the data DIR or ../shared/bench next to the repository."""
    if explicit:
        return os.path.abspath(explicit)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (os.environ.get("OVQ_BENCH_SCRIPTS"), "/work/shared/bench", data, os.path.join(repo, "..", "shared", "bench")):
        if d and os.path.isfile(os.path.join(d, "nncf_reference.py")) and os.path.isfile(os.path.join(d, "evaluate.py")):
            return os.path.abspath(d)
    raise SystemExit("cannot find nncf_reference.py and evaluate.py: set OVQ_BENCH_SCRIPTS or --bench-dir")


def load_evaluate(data: str, explicit=None):
    """The benchmark set's own ``evaluate`` module (run_model, load_eval, case_metrics)."""
    import sys

    d = find_bench_scripts(data, explicit)
    if d not in sys.path:
        sys.path.insert(0, d)
    import evaluate

    return evaluate


def calib_rows(inputs, path: str, n=None) -> list:
    """The first ``n`` (default: all) rows of a case's calib.npz as ``[{input name: array}, ...]``, for the
    model inputs ``inputs`` (what nncf_reference.py feeds NNCF). Each array is decompressed once, here."""
    import numpy as np

    cal = np.load(path)
    feeds = {}
    for inp in inputs:
        key = next(f"input:{k}" for k in inp.get_names() if f"input:{k}" in cal.files)
        feeds[inp.get_any_name()] = np.ascontiguousarray(cal[key][:n])
    count = len(next(iter(feeds.values())))
    return [{k: v[i] for k, v in feeds.items()} for i in range(count)]
