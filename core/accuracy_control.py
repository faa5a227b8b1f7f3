"""Accuracy control: revert the fewest quantizers to float, in the order of the sensitivity ranking.

Both forms search the same thing. With the quantizers ranked by the error :mod:`ovquant.sensitivity`
measures per int8 work their revert loses (:func:`speed_aware_order`), let ``M_k`` be the model with the
top ``k`` of them reverted to float (a FakeQuantize's readers
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
import math
import warnings
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import openvino as ov

from .dataset import FeedBuilder, one_shot, replayable
from .revert_order import guided_fewest, speed_aware_order
from .sensitivity import bias_edits, find_quantizers, layers_reading
from .sequence_ops import SEQUENCE_OPS, constant_weights
from .errors import ConfigError, DataError
from .validation import DROP_TOL, Validator, check_drop_type, drop_of, validation_items  # noqa: F401 (re-exported)


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


def revert(model: ov.Model, names: Sequence[str], fp32: Optional[ov.Model] = None, whole_matmuls: bool = False) -> list:
    """Put the quantizers named in ``names`` back to float, in place; returns the names reverted. With
    ``whole_matmuls``, a MatMul whose input quantizer goes also gets its float weights (accuracy control)."""
    import openvino.opset13 as ops

    found = find_quantizers(model, fp32)
    wanted, done, touched = _with_sequence_peers(found, set(names)), [], set()
    if whole_matmuls:
        wanted = _with_matmul_weights(found, wanted)
    gone = {q["name"] for q in found if q["name"] in wanted}
    for e in bias_edits(model, fp32, found):   # a layer with no quantizer left gets its FP32 bias back
        if all(found[i]["name"] in gone for i in e["owners"]):
            e["input"].replace_source_output(ops.constant(e["float"]).output(0))
    for qz in found:
        if qz["name"] not in wanted:
            continue
        alt = qz["float"]
        if isinstance(alt, np.ndarray):
            alt = ops.constant(alt, name=f"{qz['name']}/float").output(0)
        touched |= {r.get_node() for r in qz["quantized"].get_target_inputs()
                    if r.get_node().get_type_name() in SEQUENCE_OPS}
        for r in list(qz["quantized"].get_target_inputs()):
            r.replace_source_output(alt)
        done.append(qz["name"])
    twins = {n.get_friendly_name(): n for n in fp32.get_ordered_ops()} if fp32 is not None and touched else {}
    for op in touched:   # the op goes back to float whole: the FP32 model's weights, else the dequantized ones
        constant_weights(op, twins.get(op.get_friendly_name()))
    return done


def _with_matmul_weights(found: list, wanted: set) -> set:
    """``wanted`` plus the weight quantizers of each MatMul whose input quantizer is in it: int8 weights beside
    a float input keep their rounding, and with oneDNN capped at AVX2 the CPU plugin refuses that
    weight-decompressed product ("could not create a primitive descriptor for the inner product")."""
    readers: dict = {}
    for qz in found:
        for n in layers_reading(qz["quantized"]):
            if n.get_type_name() == "MatMul":
                readers.setdefault(n.get_friendly_name(), []).append(qz)
    out = set(wanted)
    for qs in readers.values():
        if any(q["kind"] == "activations" and q["name"] in wanted for q in qs):
            out |= {q["name"] for q in qs if q["kind"] != "activations"}
    return out


def _with_sequence_peers(found: list, wanted: set) -> set:
    """``wanted`` plus every other quantizer read by a recurrent sequence op that one of them feeds: such
    an op goes back to float whole (with some of its inputs in float and its int8 weights kept, the CPU
    plugin refuses the model: "LSTMSequence ... expects Constant for port 4")."""
    readers: dict = {}
    for qz in found:
        for r in qz["quantized"].get_target_inputs():
            if r.get_node().get_type_name() in SEQUENCE_OPS:
                readers.setdefault(r.get_node().get_friendly_name(), set()).add(qz["name"])
    out = set(wanted)
    for names in readers.values():
        if names & out:
            out |= names
    return out


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
    if k not in errors:   # measured, not assumed: a quantizer the board cannot switch stays in the model
        passes(k)
    final = errors[k]
    return {"max_output_error": bound, "reverted": list(ranking[:k]), "n_reverted": k,
            "n_quantizers": len(ranking), "evaluations": len(seen),
            "relative_l2_before": [round(v, 6) for v in errors.get(0, [])],
            "relative_l2_after": [round(v, 6) for v in final]}


def latency(models: dict, sample: dict, rounds: int = 5, per_round: int = 20) -> dict:
    """Median milliseconds per inference of each model (name -> ov.Model) on ``sample`` (a feed),
    measured in ``rounds`` interleaved rounds of ``per_round`` inferences each, with the spread."""
    core = ov.Core()
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}   # as benchmarks/latency.py
    reqs = {k: core.compile_model(m, "CPU", cfg).create_infer_request() for k, m in models.items()}
    times = {k: [] for k in models}
    for r in reqs.values():
        r.infer(sample)                # the sample stays in the input tensors: timed calls pass none
    for _ in range(rounds):
        for k, r in reqs.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                r.infer()
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
    ranking = speed_aware_order(q, sens["quantizers"], fp32)
    ctl = limit_output_error(board, ranking, float(max_output_error))
    full = q.clone() if ctl["n_reverted"] else q
    ctl["reverted_with_them"] = sorted(set(revert(q, ctl["reverted"], fp32, whole_matmuls=True)) - set(ctl["reverted"]))
    inner = _body_quantizers(q)
    if inner or ctl["reverted_with_them"]:   # the board switched other quantizers: the result is measured as it is
        ctl["relative_l2_after"] = [round(v, 6) for v in _measured(fp32, q, samples)]
    if inner:   # the board switches top-level quantizers only
        ctl["not_controlled"] = f"{inner} quantizer(s) inside If bodies"
        warnings.warn(f"max_output_error: the {inner} quantizer(s) inside If bodies are not ranked or reverted; "
                      f"the returned model's relative L2 error is {max(ctl['relative_l2_after']):.4g}", stacklevel=3)
    ctl["within_bound"] = max(ctl["relative_l2_after"] or [0.0]) <= float(max_output_error)
    ctl["samples"] = len(samples)
    ctl["samples_from"] = "held back" if held else "calibration"
    ctl["how"] = "FP32 fallback (the quantizer is removed; a weight is kept in float)"
    ctl["speed"] = speed_report(fp32, full, q, samples[0])
    ctl["seconds"] = round(time.perf_counter() - t1, 3)
    report["output_error_control"] = ctl
    return q


def _body_quantizers(model: ov.Model) -> int:
    """The quantizers inside the If bodies of ``model`` (:func:`ovquant.inspect.quantizers` of each body)."""
    from .inspect import quantizers

    return sum(len(quantizers(n.get_function(i))) for n in model.get_ordered_ops() if n.get_type_name() == "If"
               for i in (0, 1))


def _measured(fp32: ov.Model, q: ov.Model, samples: list) -> list:
    """Each output's relative L2 error of ``q`` against ``fp32`` pooled over ``samples``."""
    feeds = FeedBuilder(fp32.inputs)
    rf, rq = (ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
              for m in (fp32, q))
    num, den = np.zeros(len(fp32.outputs)), np.zeros(len(fp32.outputs))
    for i, s in enumerate(samples):
        a, b = rf.infer(feeds(s, i)), rq.infer(feeds(s, i))
        for k in range(len(fp32.outputs)):
            x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
            num[k] += float(((x - y) ** 2).sum())
            den[k] += float((x ** 2).sum())
    return [float(np.sqrt(n / d)) if d > 0 else 0.0 for n, d in zip(num, den)]


def control_metric(fp32: ov.Model, q: ov.Model, validator: Validator, ranking_samples: list, max_drop: float,
                   drop_type: str, max_reverted: Optional[int] = None) -> tuple:
    """Revert the fewest top-ranked quantizers of ``q`` (in place) so that the metric drop is within
    ``max_drop``; returns ``(q, report entry)``."""
    from .sensitivity import Switchboard, analyze, score, _output_names

    m_fp32 = validator(fp32)
    if not math.isfinite(m_fp32):
        raise ConfigError(f"validation_fn: returned {m_fp32} for the FP32 model; the metric must be a finite number "
                          "(an empty validation dataset?)")
    m_int8 = validator(q)
    entry = {"metric_fp32": m_fp32, "metric_int8_full": m_int8, "max_drop": max_drop, "drop_type": drop_type,
             "drop_int8_full": drop_of(m_fp32, m_int8, drop_type)}
    if entry["drop_int8_full"] <= max_drop + DROP_TOL:
        entry.update(reverted=[], n_reverted=0, metric=m_int8, drop=entry["drop_int8_full"], ranked=False)
        return q, entry
    t0 = time.perf_counter()
    board = Switchboard(q, fp32, ranking_samples, histograms=False)
    sens = analyze(board, _output_names(q))
    ranking = speed_aware_order(q, sens["quantizers"], fp32)
    entry["ranking_seconds"], entry["ranking_samples"] = round(time.perf_counter() - t0, 3), len(ranking_samples)
    n = min(len(ranking), max_reverted) if max_reverted is not None else len(ranking)
    metrics, runs_ranking = {0: m_int8}, board.runs

    def metric_of(k: int) -> float:
        if k not in metrics:
            cand = q.clone()
            revert(cand, ranking[:k], fp32, whole_matmuls=True)
            metrics[k] = validator(cand)
        return metrics[k]

    def error_of(k: int) -> float:
        return score(board.errors(ranked_config(board, ranking, k)))

    if n == len(ranking):
        k, _ = guided_fewest(n, lambda j: drop_of(m_fp32, metric_of(j), drop_type), error_of, max_drop,
                             entry["drop_int8_full"], tol=DROP_TOL)
    else:
        k, _ = _capped(n, lambda j: drop_of(m_fp32, metric_of(j), drop_type) <= max_drop + DROP_TOL)
    entry["error_probes"] = board.runs - runs_ranking   # switch-model passes that guided the probes
    del board
    entry["reverted_with_them"] = sorted(set(revert(q, ranking[:k], fp32, whole_matmuls=True)) - set(ranking[:k]))
    metric = metrics.get(k)   # measured, not assumed FP32's when all went: one not found stays quantized
    if metric is None:
        metric = metrics[k] = validator(q)
    entry.update(reverted=ranking[:k], n_reverted=k, n_quantizers=len(ranking), metric=metric,
                 drop=drop_of(m_fp32, metric, drop_type), ranked=True,
                 probed={str(j): v for j, v in sorted(metrics.items())})
    entry["within_max_drop"] = entry["drop"] <= max_drop + DROP_TOL
    return q, entry


def _capped(n: int, passes: Callable[[int], bool]) -> tuple:
    """:func:`fewest` over ``[0, n]`` where ``n`` itself must be evaluated (a cap below the full list)."""
    k, seen = fewest(n + 1, passes)
    return min(k, n), seen


def _ranking_samples(fp32: ov.Model, calibration: Any, validation_dataset: Any, pipeline_info: Optional[tuple], n: int) -> tuple:
    """Samples to rank on: held-back calibration samples, else the validation Dataset's model inputs
    (an ovquant/NNCF Dataset with a transform), else calibration samples."""
    from .dataset import held_back, open_source, take

    data = open_source(calibration, list(fp32.inputs))
    rows, unseen = held_back(data, *pipeline_info, n) if pipeline_info else (list(take(data, n)), False)
    if unseen:
        return rows, "held-back calibration"
    if hasattr(validation_dataset, "transform_fn") or hasattr(validation_dataset, "get_inference_data"):
        items = validation_dataset.get_inference_data() if hasattr(validation_dataset, "get_inference_data") \
            else validation_dataset
        return list(take(items, n)), "validation"
    return rows, "calibration"


def quantize_with_accuracy_control_report(model: Any, calibration_dataset: Any, validation_dataset: Any,
                                          validation_fn: Callable, max_drop: float = 0.01,
                                          drop_type: Any = "absolute", *, ranking_subset_size: int = 32,
                                          max_reverted: Optional[int] = None, **kwargs) -> tuple:
    """:func:`quantize_with_accuracy_control`, returning ``(model, report)``; the report's
    ``accuracy_control`` holds the metrics, the reverted quantizers and the validation runs."""
    from .api import _as_model, compress_weights, quantize_with_report

    drop_type = check_drop_type(drop_type)
    for key in ("advanced_quantization_parameters", "advanced_accuracy_restorer_parameters"):   # NNCF's
        if kwargs.pop(key, None) is not None:
            raise ConfigError(f"{key}: NNCF's advanced parameters have no ovquant equivalent; leave it None")
    if not isinstance(max_drop, (int, float)) or not max_drop >= 0:
        raise ConfigError(f"max_drop: expected a number >= 0, got {max_drop!r}")
    if one_shot(validation_dataset):
        raise DataError("validation_dataset: a one-shot iterator (a generator) cannot be read again for each "
                        "validation run: give a list, a Dataset over a list, or another source that can be read twice")
    calibration_dataset = replayable(calibration_dataset)   # read by the quantization and the ranking
    t0 = time.perf_counter()
    fp32 = _as_model(model)
    q, report = quantize_with_report(fp32, calibration_dataset, **kwargs)
    t_quant = time.perf_counter() - t0
    full = q.clone()
    validator = Validator(validation_fn, validation_items(validation_dataset))
    if hasattr(validator.data, "__len__") and len(validator.data) == 0:
        raise DataError("validation_dataset: it is empty; accuracy control needs samples to score the models on")
    settings = report["settings"]
    shuffled = any((st.get("params") or {}).get("shuffle_data") for st in settings.get("steps", [])
                   if isinstance(st.get("params"), dict))
    info = None if shuffled else (None, settings.get("stat_subset_size"))   # shuffled: which were seen is not kept
    rows, source = _ranking_samples(fp32, calibration_dataset, validation_dataset, info, ranking_subset_size)
    q, entry = control_metric(fp32, q, validator, rows, float(max_drop), drop_type, max_reverted)
    entry["ranking_samples_from"] = source
    entry["validation_runs"] = validator.runs
    entry["validation_seconds"] = round(validator.seconds, 3)
    entry["quantize_seconds"] = round(t_quant, 3)
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    entry["time_vs_plain_quantization"] = round(entry["seconds"] / t_quant, 2) if t_quant > 0 else None
    if entry["n_reverted"]:
        entry["speed"] = speed_report(fp32, full, q, rows[0])
    report["accuracy_control"] = entry
    return q, report


def quantize_with_accuracy_control(model: Any, calibration_dataset: Any, validation_dataset: Any,
                                   validation_fn: Callable, max_drop: float = 0.01, drop_type: Any = "absolute",
                                   **kwargs) -> ov.Model:
    """Quantize ``model`` as :func:`ovquant.quantize` does (``kwargs`` are its keywords), then revert the
    fewest quantizers to float so that ``validation_fn(compiled_model, validation_data)`` (higher is
    better) drops by at most ``max_drop`` from FP32's: absolute (``fp32 - int8``) or relative
    (``(fp32 - int8) / |fp32|``), as ``nncf.quantize_with_accuracy_control``. Quantizers are ranked by
    :mod:`ovquant.sensitivity` on ``ranking_subset_size`` samples (held-back calibration samples where
    the data has them); the search is described in :mod:`ovquant.accuracy_control`."""
    return quantize_with_accuracy_control_report(model, calibration_dataset, validation_dataset, validation_fn,
                                                 max_drop, drop_type, **kwargs)[0]


def control_summary(report: dict) -> list:
    """Console lines: every algorithm's ``notice``, the sensitivity pass and the output-error control."""
    lines = [f"{a['name']}: {a['notice']}" for a in report.get("algorithms", []) if a.get("notice")]
    sens = report.get("sensitivity")
    if sens and sens["quantizers"]:
        top = sens["quantizers"][0]
        lines.append(f"sensitivity: {sens['n_quantizers']} quantizers on {sens['samples']} samples in "
                     f"{sens['seconds']:.1f} s ({sens.get('cost_vs_fp32_pass')}x one FP32 pass); worst "
                     f"{top['name']!r} with {100 * top['share']:.1f}% of the error")
    ctl = report.get("output_error_control")
    if ctl:
        sp = ctl["speed"]
        with_them = f" (and {len(ctl['reverted_with_them'])} with them)" if ctl.get("reverted_with_them") else ""
        lines.append(f"max_output_error {ctl['max_output_error']:g}: reverted {ctl['n_reverted']} of "
                     f"{ctl['n_quantizers']} quantizers to float{with_them}; relative L2 "
                     f"{max(ctl['relative_l2_before'] or [0]):.4f} -> {max(ctl['relative_l2_after'] or [0]):.4f}; "
                     f"speed-up over FP32 {sp['speedup_result']:.2f}x (full INT8 {sp['speedup_full_int8']:.2f}x)"
                     + ("" if ctl.get("within_bound", True) else "; the bound is NOT met"))
    return lines
