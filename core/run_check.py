"""The check every model :func:`ovquant.quantize` returns has passed, and the repair of one that fails it.

The check: the quantized model compiles on the device and runs the first :data:`SAMPLES` calibration samples
with outputs finite wherever FP32's are, and none of them noise against FP32: for each output, with ``a_i`` and
``b_i`` the FP32 and INT8 values of sample ``i`` (where FP32's are finite),
``sqrt(sum_i |a_i - b_i|^2 / sum_i |a_i|^2)`` below :data:`~ovquant.output_check.SANITY_RELATIVE_L2` (1.0: an
all-zero output scores exactly 1, garbage far more; an int8 model of either preset is at 0.01 to 0.3). The
samples are pooled so that an output FP32 leaves near zero on one sample does not fail it. FP32 runs on CPU with
f32 precision.

The repair: OpenVINO's CPU plugin refuses some int8 patterns and computes others wrongly (an int8
FullyConnected chain on a 2-D input of 4, 6 or 8 rows returns zeros with the VNNI kernels of OpenVINO
2026.4; a per-row weight scale on a MatMul's first input is refused). With the quantizers in graph order, the
smallest ``k`` such that the model passes with the first ``k`` in float is found by galloping and bisection
(:func:`~ovquant.accuracy_control.fewest`, about ``2 log2 N`` compiles, only on failure). Quantizer ``k - 1``
alone goes back to float when that passes, else the first ``k`` do; a warning names them and the nodes that
read them, and ``report["repaired"]`` lists them. This repeats up to :data:`MAX_REPAIRS` times; a model that
still fails (or fails with every quantizer in float) raises :class:`~ovquant.errors.QuantizationFailed`.
"""
import warnings
from typing import Any, Optional

import numpy as np
import openvino as ov

from .dataset import FeedBuilder, open_source, take
from .errors import QuantizationFailed
from .output_check import SANITY_RELATIVE_L2, _first_line

MAX_REPAIRS = 3
#: calibration samples the check runs (pooled)
SAMPLES = 8
_F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def _name(o: ov.Output) -> str:
    return o.get_any_name() if o.get_names() else o.get_node().get_friendly_name()


def problem(q: ov.Model, device: str, feeds: list, want: list, names: list) -> Optional[str]:
    """Why ``q`` fails the check on ``feeds`` (FP32's outputs ``want``, per feed), or None."""
    try:
        request = ov.Core().compile_model(q, device, _F32 if device == "CPU" else {}).create_infer_request()
        got = [[np.array(v) for v in request.infer(f).values()] for f in feeds]
    except Exception as exc:
        return f"does not run on {device}: {_first_line(exc)}"
    where = f"the first {len(feeds)} calibration sample(s)"
    for k, name in enumerate(names):
        num = den = 0.0
        for w, g in zip(want, got):
            a, b = np.asarray(w[k], np.float64).ravel(), np.asarray(g[k], np.float64).ravel()
            keep = np.isfinite(a)
            a, b = a[keep], b[keep]
            if not np.isfinite(b).all():
                return f"gives output {name!r} not finite on {where} where FP32's is"
            num, den = num + float(((a - b) ** 2).sum()), den + float((a ** 2).sum())
        if den > 0 and (num / den) ** 0.5 >= SANITY_RELATIVE_L2:
            return f"gives output {name!r} as noise on {where} (relative L2 {(num / den) ** 0.5:.3g} against FP32)"
    return None


def checked(fp32: ov.Model, q: ov.Model, data: Any, device: str, report: dict) -> ov.Model:
    """``q`` once it passes the check, repaired in place where needed (see the module docstring)."""
    samples = list(take(open_source(data, list(fp32.inputs)), SAMPLES))
    if not samples:
        return q
    build = FeedBuilder(fp32.inputs)
    feed = [build(s, i) for i, s in enumerate(samples)]
    request = ov.Core().compile_model(fp32, "CPU", _F32).create_infer_request()
    want = [[np.array(v) for v in request.infer(f).values()] for f in feed]
    names = [_name(o) for o in fp32.outputs]
    why = problem(q, device, feed, want, names)
    for _ in range(MAX_REPAIRS):
        if why is None:
            return q
        _repair(fp32, q, device, feed, want, names, why, report)
        why = problem(q, device, feed, want, names)
    if why is not None:
        raise QuantizationFailed(f"the quantized model {why}, after {MAX_REPAIRS} repairs")
    return q


def _repair(fp32, q, device, feed, want, names, why: str, report: dict) -> None:
    from .accuracy_control import fewest, revert
    from .sensitivity import find_quantizers, layers_reading

    found = find_quantizers(q, fp32)
    keys = [qz["name"] for qz in found]

    def passes(k: int, only: Optional[list] = None) -> bool:
        m = q.clone()
        revert(m, only if only is not None else keys[:k], fp32)
        return problem(m, device, feed, want, names) is None

    if not found or not passes(len(found)):
        raise QuantizationFailed(f"the quantized model {why} (and with every quantizer in float too)")
    k = fewest(len(found), passes)[0]
    last = found[k - 1]
    alone = k == 1 or passes(0, [last["name"]])
    label = last["quantized"].get_node().get_friendly_name()   # the FakeQuantize's name, as the report gives it
    readers = sorted({n.get_friendly_name() for n in layers_reading(last["quantized"])})
    gone = revert(q, [last["name"]] if alone else keys[:k], fp32)
    which = f"quantizer {label!r}" if alone else f"the first {k} quantizers (the last: {label!r})"
    warnings.warn(f"the quantized model {why}; it passes with {which} in float, read by "
                  f"{', '.join(map(repr, readers))}, and is kept so (--ignored-scope "
                  f"{' --ignored-scope '.join(readers)} says so up front)", stacklevel=4)
    report.setdefault("repaired", []).append({"problem": why, "reverted": gone, "read_by": readers})
