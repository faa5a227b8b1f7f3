"""The check of a quantized model before it is written: it compiles and runs on the target's device (or
CPU), and its outputs stay close to FP32's on a few samples (relative L2 error, max abs error, cosine)."""
from typing import Any, Optional

import numpy as np
import openvino as ov

from .dataset import FeedBuilder, open_source, take
from .errors import QuantizationFailed


#: a quantized model whose output's relative L2 error against FP32 reaches this on the checked samples is
#: refused (an int8 model of either preset is typically at 0.01 to 0.3; 1.0 is an all-zero output)
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
            raise QuantizationFailed(f"the quantized model does not run on {device}: {_first_line(exc)}") from None
        return [{"error": f"{type(exc).__name__}: {_first_line(exc)}"}]
    with np.errstate(all="ignore"):   # NaN outputs are reported in the numbers, not as warnings
        return _output_error(fp32, samples, feeds, cf.create_infer_request(), rq)


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
        if e["relative_l2"] >= bound:
            return (f"output {e['output']!r} has relative L2 error {e['relative_l2']:.3g} against FP32 on "
                    f"{e['samples']} checked samples, at or beyond the sanity bound {bound:g}")
    return None
