"""What the example plugin's estimators and aggregator did during the current run.

ovquant's run report lists every quantizer with its range and scheme, but not which range estimator
and aggregator produced that range. So that a report can still show that ``mse_range`` and
``trimmed_mean`` ran, they count their work here and ``SQNRReport`` copies the counts into its report
entry (``example_plugin_usage``). The counts are reset when a pipeline starts its first statistics
stage (the ``stage_started`` event with ``stage == 1``), so they describe one run. Values served from
ovquant's statistics cache are not recomputed, so they are not counted. Thread-safe: the engine
reduces samples in OpenVINO callback threads.
"""
import threading
from collections import defaultdict

_lock = threading.Lock()
_counts: dict = defaultdict(int)
_fractions: dict = defaultdict(list)   # estimator name -> chosen t / max|x|, one per slice (side max)
_trims: set = set()
ESTIMATORS = ("mse_range",)


def count(key: str, n: int = 1) -> None:
    with _lock:
        _counts[key] += int(n)


def record_fractions(estimator: str, values) -> None:
    with _lock:
        _fractions[estimator].extend(float(v) for v in values)


def record_trim(trim: float) -> None:
    with _lock:
        _trims.add(float(trim))


def reset() -> None:
    with _lock:
        _counts.clear()
        _fractions.clear()
        _trims.clear()


def snapshot() -> dict:
    """The counts as a JSON-ready dict."""
    with _lock:
        names = sorted(set(ESTIMATORS) | {k.split(".")[0] for k in _counts if not k.startswith("trimmed_mean")})
        out = {}
        for name in names:
            e = {"slices_in_graph": _counts[f"{name}.graph"], "slices_numpy": _counts[f"{name}.numpy"],
                 "in_graph_reductions_planned": _counts[f"{name}.planned"]}
            fr = _fractions.get(name)
            if fr:
                e.update(clip_fraction_mean=round(sum(fr) / len(fr), 4), clip_fraction_min=round(min(fr), 4),
                         slices_clipped=sum(f < 1.0 for f in fr))
            out[name] = e
        out["trimmed_mean"] = {"aggregations": _counts["trimmed_mean"], "trims": sorted(_trims)}
    return out
