"""The check of a quantized model before it is written: it compiles and runs on the target's device (or
CPU), and its outputs stay close to FP32's on a few samples (relative L2 error, max abs error, cosine)."""
from typing import Any, Optional

import numpy as np
import openvino as ov

from .dataset import FeedBuilder, open_source, take
from .errors import QuantizationFailed


#: a quantized model whose output's relative L2 error against FP32 exceeds this on the checked samples
#: is refused (an int8 model of either preset is typically at 0.01 to 0.3; 1.0 means the output is noise)
SANITY_RELATIVE_L2 = 1.0
#: samples the output is checked on before it is written
CHECK_SAMPLES = 8


def check_device(target_device: Optional[str]) -> tuple:
    """(OpenVINO device the output is checked on, note): the target's own device where this machine has
    it, else CPU."""
    wanted = {"VPU": "NPU", "ANY": "CPU", None: "CPU"}.get(target_device, target_device or "CPU")
    wanted = str(wanted).split("_")[0]
    try:
        available = ov.Core().available_devices
    except Exception:
        available = ["CPU"]
    if any(d == wanted or d.startswith(wanted + ".") for d in available):
        return wanted, wanted
    return "CPU", f"CPU ({wanted} is not available on this machine)"


def output_error(fp32: ov.Model, q: ov.Model, data: Any, n: int = 8, device: str = "CPU",
                 raise_on_failure: bool = False) -> list:
    """INT8-vs-FP32 error of each model output on the first ``n`` samples of ``data``. With
    ``raise_on_failure``, a quantized model that does not compile or run raises
    :class:`~ovquant.errors.QuantizationFailed`; otherwise the problem is an ``error`` entry."""
    core = ov.Core()
    samples = list(take(open_source(data, list(fp32.inputs)), n))
    feeds = FeedBuilder(fp32.inputs)
    cf = core.compile_model(fp32, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    try:
        hint = {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {}
        cq = core.compile_model(q, device, hint)
        rq = cq.create_infer_request()
        if samples:
            rq.infer(feeds(samples[0], 0))
    except Exception as exc:
        if raise_on_failure:
            raise does_not_run(fp32, q, device, exc, feeds(samples[0], 0) if samples else None) from None
        return [{"error": f"{type(exc).__name__}: {_first_line(exc)}"}]
    with np.errstate(all="ignore"):   # NaN outputs are reported in the numbers, not as warnings
        return _output_error(fp32, samples, feeds, cf.create_infer_request(), rq)


def check_runs(fp32: ov.Model, q: ov.Model, data: Any, device: str = "CPU") -> None:
    """Raise :class:`~ovquant.errors.QuantizationFailed` unless ``q`` compiles on ``device`` and runs the
    first sample of ``data`` with finite outputs wherever FP32's are finite (FP32 runs only when an
    output of ``q`` is not finite). The check :func:`~ovquant.quantize` makes on every model it returns."""
    samples = list(take(open_source(data, list(fp32.inputs)), 1))
    if not samples:
        return
    feeds = FeedBuilder(fp32.inputs)
    core = ov.Core()
    try:
        got = core.compile_model(q, device, {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {})(
            feeds(samples[0], 0))
    except Exception as exc:
        raise does_not_run(fp32, q, device, exc, feeds(samples[0], 0)) from None
    bad = [k for k in range(len(q.outputs)) if not np.isfinite(np.asarray(got[k], np.float64)).all()]
    if bad:
        want = core.compile_model(fp32, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(feeds(samples[0], 0))
        for k in bad:
            a, b = np.asarray(want[k], np.float64), np.asarray(got[k], np.float64)
            if not np.isfinite(b[np.isfinite(a)]).all():
                o = fp32.outputs[k]
                name = o.get_any_name() if o.get_names() else o.get_node().get_friendly_name()
                raise QuantizationFailed(f"output {name!r} of the quantized model is not finite on the first "
                                         "calibration sample where FP32's is")


def does_not_run(fp32: ov.Model, q: ov.Model, device: str, exc: Exception, feed: Any) -> QuantizationFailed:
    """The error for a quantized model ``q`` that ``device`` refuses with ``exc``, naming the quantizer to
    blame where one is found: with the quantizers in graph order, the smallest ``k`` such that ``q`` runs
    with the first ``k`` in float (a binary search, about ``2 log2 N`` compiles) makes quantizer ``k - 1``
    one; it is named alone when ``q`` runs with just it in float, else as the last of those ``k``."""
    from .accuracy_control import fewest
    from .sensitivity import find_quantizers, layers_reading

    msg = f"the quantized model does not run on {device}: {_first_line(exc)}"
    found = find_quantizers(q, fp32)
    if not found or not _runs_without(q, fp32, [qz["name"] for qz in found], device, feed):
        return QuantizationFailed(msg)
    k = fewest(len(found), lambda k: _runs_without(q, fp32, [qz["name"] for qz in found[:k]], device, feed))[0]
    culprit = found[k - 1]
    name = culprit["quantized"].get_node().get_friendly_name()   # the FakeQuantize's name, as the report gives it
    readers = sorted({n.get_friendly_name() for n in layers_reading(culprit["quantized"])})
    if k == 1 or _runs_without(q, fp32, [culprit["name"]], device, feed):
        which = f"quantizer {name!r} in float"
    else:
        which = f"the first {k} quantizers in float (the last: {name!r})"
    return QuantizationFailed(f"{msg}; it runs with {which}: put {', '.join(map(repr, readers))} in the ignored "
                              f"scope ({' '.join('--ignored-scope ' + r for r in readers)})")


def _runs_without(q: ov.Model, fp32: ov.Model, names: list, device: str, feed: Any) -> bool:
    """Whether a copy of ``q`` with the quantizers ``names`` in float compiles on ``device`` and runs ``feed``."""
    from .accuracy_control import revert

    m = q.clone()
    revert(m, names, fp32)
    try:
        compiled = ov.Core().compile_model(m, device, {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {})
        if feed is not None:
            compiled(feed)
        return True
    except Exception:
        return False


def _first_line(exc: Exception) -> str:
    """The first informative line of an OpenVINO exception, at most 200 characters."""
    msg = next((l.strip() for l in str(exc).splitlines() if l.strip() and "Exception from" not in l),
               type(exc).__name__)
    return msg[:200]


def _output_error(fp32, samples, feeds, rf, rq) -> list:
    out = []
    for k, o in enumerate(fp32.outputs):
        num = den = 0.0
        cos, mx, bad = [], 0.0, 0
        for i, s in enumerate(samples):
            feed = feeds(s, i)
            a = np.asarray(rf.infer(feed)[k], np.float64).ravel()
            b = np.asarray(rq.infer(feed)[k], np.float64).ravel()
            finite = np.isfinite(a)          # compare where FP32 itself is finite
            a, b = a[finite], b[finite]
            if not np.isfinite(b).all():
                bad += 1
                continue
            num += float(((a - b) ** 2).sum())
            den += float((a ** 2).sum())
            mx = max(mx, float(np.abs(a - b).max()) if a.size else 0.0)
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos.append(float(a @ b / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0))
        name = o.get_any_name() if o.get_names() else o.get_node().get_friendly_name()
        rel = (num / den) ** 0.5 if den else (0.0 if num == 0 else float("inf"))
        entry = {"output": name, "samples": len(samples), "relative_l2": _finite_or_none(rel, 6),
                 "max_abs": _finite_or_none(mx, 6), "cosine_mean": _finite_or_none(float(np.mean(cos)) if cos else 1.0, 6)}
        if bad:
            entry["non_finite_samples"] = bad
        out.append(entry)
    return out


def _finite_or_none(v: float, digits: int):
    """A number for the JSON report: rounded, or None where it is not finite (strict JSON has no NaN)."""
    return round(v, digits) if np.isfinite(v) else None


def check_output_error(entries: list, bound: float = SANITY_RELATIVE_L2) -> Optional[str]:
    """Why the measured output error makes the model unusable, or None."""
    for e in entries:
        if "error" in e:
            return f"the quantized model does not run: {e['error']}"
        if e.get("non_finite_samples") or e.get("relative_l2") is None:
            return (f"output {e['output']!r} is not finite on {e.get('non_finite_samples') or e['samples']} of "
                    f"{e['samples']} checked samples where FP32's is")
        if e["relative_l2"] > bound:
            return (f"output {e['output']!r} has relative L2 error {e['relative_l2']:.3g} against FP32 on "
                    f"{e['samples']} checked samples, beyond the sanity bound {bound:g}")
    return None
