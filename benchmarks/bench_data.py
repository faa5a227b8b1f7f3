"""Where the benchmark set lives and how its calibration rows are read (shared by the benchmark scripts)."""
import os


def default_dir() -> str:
    """The ../shared/bench output folder: ``$OVQ_BENCH_DIR`` or ``~/.cache/ovquant-bench``."""
    return os.environ.get("OVQ_BENCH_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ovquant-bench")


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
