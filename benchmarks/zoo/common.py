"""Paths and small helpers shared by the zoo's prepare and run steps."""
import json
import os
import sys
import time

_T0 = time.time()


def zoo_dir() -> str:
    """The zoo's cache folder: ``$OVQ_ZOO_DIR`` or ``~/.cache/ovquant-zoo``."""
    return os.environ.get("OVQ_ZOO_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ovquant-zoo")


def bench_dir() -> str:
    """The earlier benchmark set's folder, read where present: ``$OVQ_BENCH_DIR`` or ``~/.cache/ovquant-bench``."""
    return os.environ.get("OVQ_BENCH_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ovquant-bench")


def repo_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg: str) -> None:
    print(f"[zoo +{time.time() - _T0:.0f}s] {msg}", flush=True)


def missing(what: str, how: str) -> "SystemExit":
    """The one line that tells what to install, as an exit."""
    print(f"zoo: {what} is missing: {how}", file=sys.stderr, flush=True)
    return SystemExit(2)


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, default=str)
    os.replace(tmp, path)


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def emit(line: str, out=None) -> None:
    """Print one JSON line and append it to ``out`` (a .jsonl file) when given."""
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")
