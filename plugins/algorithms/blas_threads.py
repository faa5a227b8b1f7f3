"""Thread control of numpy's OpenBLAS (not a plugin)."""
import contextlib
import ctypes


@contextlib.contextmanager
def single_threaded_blas():
    """Run numpy's OpenBLAS on one thread inside the block (restored afterwards), so that the results
    do not depend on the core count (and see docs/benchmarks.md). Does nothing for other BLAS libraries."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
        for path in paths:
            lib = ctypes.CDLL(path)
            for prefix, suffix in (("scipy_openblas_", "64_"), ("openblas_", ""), ("openblas_", "64_")):
                get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    found.append((put, int(get())))
                    put(1)
                    break
    except OSError:
        pass
    try:
        yield
    finally:
        for put, n in found:
            put(n)
