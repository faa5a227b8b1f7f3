"""Accuracy control: revert the fewest quantizers to float, in the order of the sensitivity ranking.

Both forms search the same thing. With the quantizers ranked by :mod:`ovquant.sensitivity` (worst
first), let ``M_k`` be the model with the top ``k`` of them reverted to float (a FakeQuantize's readers
read its input again; a compressed weight is replaced by the FP32 model's constant). ``M_N`` is the
FP32 function, so it passes by definition. The search finds the smallest ``k`` with ``passes(M_k)``:

* without labels, ``passes`` is ``max_k rel_L2_k(M_k) <= max_output_error`` on held-back calibration
  samples, evaluated with the switch model (no rebuild per candidate);
* with a metric, ``passes`` is ``drop(M_k) <= max_drop`` with ``drop = m_fp32 - m(M_k)`` (absolute) or
  ``(m_fp32 - m(M_k)) / |m_fp32|`` (relative), one validation run per candidate.

Candidates are probed by galloping (``k = 1, 2, 4, ...`` until one passes) and then bisection between
the last failing and the first passing ``k``: ``O(log k*)`` evaluations, assuming that reverting more
of the ranked list does not make the model worse (the result is the first ``k`` found to pass).
"""
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import openvino as ov

from .dataset import FeedBuilder
from .sensitivity import find_quantizers
from .errors import ConfigError


def fewest(n: int, passes: Callable[[int], bool], start: int = 0) -> tuple:
    """Smallest ``k`` in ``[start, n]`` with ``passes(k)`` (``passes(n)`` is taken as true and not
    evaluated); returns ``(k, {k: result} of the evaluations made)``."""
    seen: dict = {}

    def test(k: int) -> bool:
        if k >= n:
            return True
        if k not in seen:
            seen[k] = bool(passes(k))
        return seen[k]

    if test(start):
        return start, seen
    lo, step = start, 1          # lo fails
    hi = n
    while lo + step < n:
        if test(lo + step):
            hi = lo + step
            break
        lo, step = lo + step, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if test(mid):
            hi = mid
        else:
            lo = mid
    return hi, seen


def revert(model: ov.Model, names: Sequence[str], fp32: Optional[ov.Model] = None) -> list:
    """Put the quantizers named in ``names`` back to float, in place; returns the names reverted."""
    wanted, done = set(names), []
    for qz in find_quantizers(model, fp32):
        if qz["name"] not in wanted:
            continue
        alt = qz["float"]
        if isinstance(alt, np.ndarray):
            import openvino.opset13 as ops

            alt = ops.constant(alt, name=f"{qz['name']}/float").output(0)
        for r in list(qz["quantized"].get_target_inputs()):
            r.replace_source_output(alt)
        done.append(qz["name"])
    return done


def ranked_config(board, ranking: Sequence[str], k: int) -> np.ndarray:
    """Switches of ``board``: every quantizer on except the first ``k`` of ``ranking``."""
    off = set(ranking[:k])
    return np.array([qz["name"] not in off for qz in board.quantizers], bool)


def limit_output_error(board, ranking: Sequence[str], bound: float) -> dict:
    """The fewest top-ranked quantizers to revert so that every output's relative L2 error is within
    ``bound`` on the board's samples."""
    errors: dict = {}

    def passes(k: int) -> bool:
        errors[k] = board.errors(ranked_config(board, ranking, k))
        return max(errors[k]) <= bound

    k, seen = fewest(len(ranking), passes)
    final = errors.get(k) or [0.0] * board.n_outputs
    return {"max_output_error": bound, "reverted": list(ranking[:k]), "n_reverted": k,
            "n_quantizers": len(ranking), "evaluations": len(seen),
            "relative_l2_before": [round(v, 6) for v in errors.get(0, [])],
            "relative_l2_after": [round(v, 6) for v in final]}


def latency(models: dict, sample: dict, rounds: int = 5, per_round: int = 20) -> dict:
    """Median milliseconds per inference of each model (name -> ov.Model) on ``sample`` (a feed),
    measured in ``rounds`` interleaved rounds of ``per_round`` inferences each, with the spread."""
    core = ov.Core()
    reqs = {k: core.compile_model(m, "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
            for k, m in models.items()}
    times = {k: [] for k in models}
    for r in reqs.values():
        r.infer(sample)
    for _ in range(rounds):
        for k, r in reqs.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                r.infer(sample)
            times[k].append((time.perf_counter() - t0) * 1000 / per_round)
    return {k: {"ms": round(float(np.median(v)), 4), "min_ms": round(float(min(v)), 4),
                "max_ms": round(float(max(v)), 4)} for k, v in times.items()}


def speed_report(fp32: ov.Model, full: ov.Model, kept: ov.Model, sample: Any) -> dict:
    """Latency of the result vs full INT8 vs FP32, and the share of full INT8's speed-up kept."""
    feed = FeedBuilder(fp32.inputs)(sample, 0)
    lat = latency({"fp32": fp32, "int8_full": full, "result": kept}, feed)
    f, q, r = lat["fp32"]["ms"], lat["int8_full"]["ms"], lat["result"]["ms"]
    gain = f - q
    return {"latency": lat, "speedup_full_int8": round(f / q, 3), "speedup_result": round(f / r, 3),
            "kept_share_of_speedup": round((f - r) / gain, 3) if gain > 0 else None}


def drop_of(reference: float, value: float, drop_type: str) -> float:
    """``reference - value`` (absolute), or that over ``|reference|`` (relative)."""
    d = float(reference) - float(value)
    if drop_type == "relative":
        return d / abs(float(reference)) if reference else (0.0 if d == 0 else float("inf"))
    return d


def check_drop_type(drop_type: Any) -> str:
    """``absolute`` or ``relative`` (NNCF's ``DropType`` enum accepted), else a ConfigError."""
    v = getattr(drop_type, "value", drop_type)
    v = str(v).lower() if v is not None else "absolute"
    if v not in ("absolute", "relative"):
        raise ConfigError(f"drop_type: expected 'absolute' or 'relative', got {drop_type!r}")
    return v


def analyze_quantized(fp32: ov.Model, q: ov.Model, samples: list, report: dict, *, sensitivity: bool,
                      max_output_error: Optional[float], held: bool) -> ov.Model:
    """What ``quantize_with_report(..., sensitivity=True / max_output_error=X)`` adds after quantizing:
    the sensitivity ranking into ``report["sensitivity"]`` and, with a bound, the reverts into
    ``report["output_error_control"]``; returns the model (``q`` itself, reverted in place)."""
    from .sensitivity import Switchboard, analyze, fp32_pass_seconds, _output_names

    t0 = time.perf_counter()
    board = Switchboard(q, fp32, samples)
    sens = analyze(board, _output_names(q))
    sens["held_back"] = held
    sens["seconds"] = round(time.perf_counter() - t0, 3)
    one = fp32_pass_seconds(fp32, samples, board.core)
    sens["fp32_pass_seconds"] = round(one, 4)
    sens["cost_vs_fp32_pass"] = round(sens["seconds"] / one, 2) if one > 0 else None
    sens["configurations"] = board.runs + 1
    if sensitivity:
        report["sensitivity"] = sens
    if max_output_error is None:
        return q
    t1 = time.perf_counter()
    ranking = [r["name"] for r in sens["quantizers"]]
    ctl = limit_output_error(board, ranking, float(max_output_error))
    full = q.clone() if ctl["n_reverted"] else q
    revert(q, ctl["reverted"], fp32)
    ctl["samples"] = len(samples)
    ctl["samples_from"] = "held back" if held else "calibration"
    ctl["how"] = "FP32 fallback (the quantizer is removed; a weight is kept in float)"
    ctl["speed"] = speed_report(fp32, full, q, samples[0])
    ctl["seconds"] = round(time.perf_counter() - t1, 3)
    report["output_error_control"] = ctl
    return q
