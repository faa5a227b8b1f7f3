"""The params of POT's quantization algorithms: DefaultQuantization and the algorithms it is made of.

POT's DefaultQuantization hands one params object to each of its steps, so its params are the union of
theirs. Each key is read by these algorithms (the others ignore it):

* MinMaxQuantization: ``preset``, ``ignored``, ``weights``, ``activations``, ``range_estimator``,
  ``saturation_fix``, ``auto_activations_granularity``, ``inplace_statistics``;
* ActivationGranularityChoice, ActivationRangeChoice: ``auto_activations_granularity``,
  ``activation_range_choice`` (DefaultQuantization appends them);
* ActivationChannelAlignment: ``ignored``;
* FastBiasCorrection: ``threshold``, ``apply_for_all_nodes``, ``use_fast_bias``, ``bias_correction_form``;
* SmoothQuant: ``use_smooth_quant``, ``smooth_quant_alpha``;
* LayerwiseTuning: ``use_layerwise_tuning`` (DefaultQuantization appends it);
* FirstLayerRounding: ``first_layer_rounding`` (DefaultQuantization appends it);
* every algorithm: the keys of :class:`ovquant.config.AlgorithmParams` (core checks them).

Each of these algorithms declares ``params_class = QuantizationParams`` and
``validate_params = validate_quantization_params``, through the same registration hook as a
third-party algorithm. The fields keep POT's order (the run report lists them in it).
"""
import math
import re
from typing import Any, Optional

import attrs

from ovquant.config import GRANULARITIES, MODES, AlgorithmParams
from ovquant.registry import get_registry
from ovquant.structure import _bad, _check_plugin, _choice, _show, plugin_params

RANGE_PRESETS = ("default", "quantile")
SATURATION_FIX = ("auto", "first_layer", "all", "measured", "no")
#: environment variable that fixes what ``saturation_fix: "auto"`` resolves to (``first_layer``, ``all``, ``no``)
SATURATION_FIX_ENV = "OVQUANT_SATURATION_FIX"
BIAS_CORRECTION_FORMS = ("exact", "fast", "mean_blob")


# ---- sections ---------------------------------------------------------------------------------------
@attrs.define(kw_only=True)
class RangeBorder:
    """``range_estimator.min`` / ``range_estimator.max``: estimator type, aggregator, POT's outlier_prob and
    clipping_value, and the params the estimator and the aggregator declare (checked against them)."""

    type: Optional[str] = None
    aggregator: Optional[str] = None
    outlier_prob: Optional[float] = None
    clipping_value: Optional[float] = None
    params: Optional[dict[str, Any]] = None
    aggregator_params: Optional[dict[str, Any]] = None


@attrs.define(kw_only=True)
class RangeEstimatorConfig:
    preset: Optional[str] = None
    min: Optional[RangeBorder] = None
    max: Optional[RangeBorder] = None


@attrs.define(kw_only=True)
class TensorQuantization:
    """``weights`` / ``activations``: the scheme a user asks for, and how ranges are estimated."""

    bits: Optional[int] = None
    mode: Optional[str] = None
    level_low: Optional[int] = None
    level_high: Optional[int] = None
    granularity: Optional[str] = None
    range_estimator: Optional[RangeEstimatorConfig] = None


@attrs.define(kw_only=True)
class IgnoredOperation:
    type: str
    attributes: dict[str, Any] = attrs.Factory(dict)


@attrs.define(kw_only=True)
class Ignored:
    """``ignored``: node names (exact, or a regex matching the whole name), NNCF's patterns and op types
    with attribute filters."""

    scope: list[str] = attrs.Factory(list)
    #: regular expressions matched at the start of node names (``re.match``, as NNCF's ``IgnoredScope.patterns``)
    patterns: list[str] = attrs.Factory(list)
    operations: list[IgnoredOperation] = attrs.Factory(list)
    skip_model: bool = False
    #: an entry that matches no node is an error, not a warning (NNCF's ``IgnoredScope(validate=True)``)
    validate: bool = False


@attrs.define(kw_only=True)
class QuantizationParams(AlgorithmParams):
    """The params of POT's DefaultQuantization (and of the algorithms it is made of)."""

    ignored: Ignored = attrs.Factory(Ignored)
    weights: Optional[TensorQuantization] = None
    activations: Optional[TensorQuantization] = None
    range_estimator: Optional[RangeEstimatorConfig] = None
    use_layerwise_tuning: bool = False
    inplace_statistics: Optional[bool] = None
    dump_intermediate_model: Optional[bool] = None
    #: "auto": "first_layer" on a host whose CPU has VNNI or AMX, "measured" on one without (saturation_mode)
    saturation_fix: str = "auto"
    threshold: Optional[float] = None
    apply_for_all_nodes: bool = False
    use_fast_bias: bool = True
    bias_correction_form: str = "fast"
    auto_activations_granularity: str = "auto"
    #: "auto": ActivationRangeChoice picks each activation's clipping range and sign; "no": MinMax's ranges
    activation_range_choice: str = "no"
    first_layer_rounding: bool = False
    use_smooth_quant: Optional[bool] = None
    smooth_quant_alpha: Optional[float] = None
    #: keep in float the ops whose int8 form is slower on the CPU (None: on where the target is the CPU)
    skip_slow_int8: Optional[bool] = None


def saturation_mode(params) -> tuple:
    """``(mode, why)``: ``saturation_fix`` as the run applies it. ``"auto"`` (the default) is
    ``$OVQUANT_SATURATION_FIX`` where set, else ``"first_layer"`` when this host's CPU has a native int8
    dot product (VNNI, AMX: int32 sums, no overflow) and ``"measured"`` when it has none (AVX2: every u8 x s8
    pair sum saturates at int16, so every layer gets, per output channel, the finest weight grid whose pair
    sums cannot overflow; plugins/algorithms/saturation.py, docs/algorithms.md, "The saturation fix on
    hosts without VNNI")."""
    import os

    from ovquant.errors import ConfigError
    from ovquant.hwtarget import native_int8

    mode = getattr(params, "saturation_fix", "auto")
    if mode != "auto":
        return mode, "set in the config"
    env = os.environ.get(SATURATION_FIX_ENV, "").strip()
    if env:
        if env not in SATURATION_FIX[1:]:
            raise ConfigError(f"environment variable {SATURATION_FIX_ENV}={env!r}: expected one of "
                              f"{', '.join(SATURATION_FIX[1:])}")
        return env, f"auto: ${SATURATION_FIX_ENV}"
    isa = native_int8()
    if isa:
        return "first_layer", f"auto: this host's CPU has {isa}, so int8 sums do not overflow"
    return "measured", "auto: this host's CPU has no VNNI or AMX, so int8 pair sums saturate at int16"


def saturation_entry(params, needed: bool, layers: int) -> dict:
    """MinMaxQuantization's report of the fix: ``{mode, why, layers}`` (``layers``: weights on a widened grid),
    with a ``notice`` for the console where "auto" did not choose POT's first_layer."""
    if not needed:
        return {"mode": "no", "why": "the target does not need it", "layers": layers}
    mode, why = saturation_mode(params)
    e = {"mode": mode, "why": why, "layers": layers}
    if mode in ("all", "measured") and why.startswith("auto"):
        what = (f"7-bit weights in all {layers} weighted layers" if mode == "all" else
                f"weights widened where int16 pair sums could overflow, in {layers} layers")
        e["notice"] = f"{what}: {why[6:]}; saturation_fix \"first_layer\" keeps POT's choice"
    return e


def validate_quantization_params(p: QuantizationParams, path: str) -> None:
    """Check the values of DefaultQuantization-style params (types were checked when structuring; the
    keys of AlgorithmParams were checked by core)."""
    _choice(f"{path}.saturation_fix", p.saturation_fix, SATURATION_FIX)
    _choice(f"{path}.bias_correction_form", p.bias_correction_form, BIAS_CORRECTION_FORMS, "bias correction form")
    _choice(f"{path}.auto_activations_granularity", p.auto_activations_granularity, GRANULARITIES + ("auto",),
            "granularity")
    _choice(f"{path}.activation_range_choice", p.activation_range_choice, ("auto", "no"), "range choice")
    if p.smooth_quant_alpha is not None and not 0 <= p.smooth_quant_alpha <= 1:
        _bad(f"{path}.smooth_quant_alpha", f"must be in [0, 1], got {p.smooth_quant_alpha}")
    if p.threshold is not None and not p.threshold > 0:
        _bad(f"{path}.threshold", f"must be positive, got {p.threshold}")
    seen = set()
    for i, s in enumerate(p.ignored.scope):
        if not s.strip():
            _bad(f"{path}.ignored.scope[{i}]", "empty node name")
        if s in seen:
            _bad(f"{path}.ignored.scope[{i}]", f"duplicate entry {_show(s)}")
        seen.add(s)
    for i, pat in enumerate(p.ignored.patterns):
        try:
            re.compile(pat)
        except re.error as exc:
            _bad(f"{path}.ignored.patterns[{i}]", f"{_show(pat)} is not a regular expression ({exc})")
    seen_ops = []
    for i, op in enumerate(p.ignored.operations):
        if not op.type.strip():
            _bad(f"{path}.ignored.operations[{i}].type", "empty op type")
        if (op.type, op.attributes) in seen_ops:
            _bad(f"{path}.ignored.operations[{i}]", f"duplicate entry for type {_show(op.type)}")
        seen_ops.append((op.type, op.attributes))
    if p.range_estimator is not None:
        _validate_range(p.range_estimator, f"{path}.range_estimator")
    for name in ("weights", "activations"):
        tq = getattr(p, name)
        if tq is not None:
            _validate_tensor(tq, f"{path}.{name}")


def _validate_tensor(tq: TensorQuantization, path: str) -> None:
    """bits, mode, granularity and the integer grid of ``weights``/``activations``.

    ``level_low``/``level_high`` have POT's meaning: the grid holds 0 and has ``|level_high| + |level_low| + 1``
    levels (a side not given takes POT's default for the bits); it must fit in ``bits`` and have at
    least 3 levels (a symmetric range with 2 levels has no scale)."""
    if tq.bits is not None and not 2 <= tq.bits <= 16:
        _bad(f"{path}.bits", f"must be between 2 and 16, got {tq.bits}" +
             (" (a 1-bit grid has no zero level and no scale)" if tq.bits == 1 else ""))
    _choice(f"{path}.mode", tq.mode, MODES, "mode")
    _choice(f"{path}.granularity", tq.granularity, GRANULARITIES, "granularity")
    lo, hi = tq.level_low, tq.level_high
    bits = tq.bits or 8
    if lo is not None and hi is not None and lo >= hi:
        _bad(f"{path}.level_low", f"level_low {lo} must be below level_high {hi}")
    for key, v in (("level_low", lo), ("level_high", hi)):
        if v is not None and not -(2 ** bits) < v < 2 ** bits:
            _bad(f"{path}.{key}", f"{v} does not fit in {bits} bits")
    if lo is not None and lo > 0:
        _bad(f"{path}.level_low", f"must be 0 or below (the integer grid holds 0), got {lo}")
    if hi is not None and hi < 0:
        _bad(f"{path}.level_high", f"must be 0 or above (the integer grid holds 0), got {hi}")
    if lo is not None or hi is not None:
        kind = path.rsplit(".", 1)[-1]
        sym_w = kind == "weights" and tq.mode in (None, "symmetric")
        eff_lo = lo if lo is not None else -2 ** (bits - 1) + (1 if sym_w else 0)
        eff_hi = hi if hi is not None else 2 ** (bits - 1) - 1
        levels = abs(eff_lo) + abs(eff_hi) + 1
        key = "level_high" if hi is not None else "level_low"
        if levels > 2 ** bits:
            _bad(f"{path}.{key}", f"levels [{eff_lo}, {eff_hi}] are {levels} levels, more than {bits} bits hold "
                                  f"({2 ** bits}); POT counts |level_high| + |level_low| + 1")
        if levels < 3:
            _bad(f"{path}.{key}", f"levels [{eff_lo}, {eff_hi}] are {levels} levels; at least 3 are needed")
    if tq.range_estimator is not None:
        _validate_range(tq.range_estimator, f"{path}.range_estimator")


def _validate_range(re_: RangeEstimatorConfig, path: str) -> None:
    """The range estimator preset, and each border (:func:`_validate_border`)."""
    _choice(f"{path}.preset", re_.preset, RANGE_PRESETS, "range estimator preset")
    for side in ("min", "max"):
        b = getattr(re_, side)
        if b is not None:
            _validate_border(b, f"{path}.{side}", side)


def _validate_border(b: RangeBorder, path: str, side: str) -> None:
    """Estimator and aggregator names and the params they declare, ``outlier_prob`` in (0, 0.5), and
    ``clipping_value``: POT clips the max at it (so it must be above 0) and the min at it (so it must be 0
    or below: the range holds 0)."""
    if b.type is not None:
        reg = get_registry()
        ranges = [n for n in reg.names("estimators") if getattr(reg.get("estimators", n).obj, "range_estimator", True)]
        try:
            est = reg.get("estimators", b.type).obj
        except KeyError:
            from ovquant.pot_compat import pot_hint

            _bad(f"{path}.type", f"unknown estimator {_show(b.type)}{pot_hint('estimators', b.type)} "
                                 f"(known: {', '.join(ranges)})")
        if not getattr(est, "range_estimator", True):
            _bad(f"{path}.type", f"{b.type!r} is a statistic for algorithms, not a range estimator "
                                 f"(range estimators: {', '.join(ranges)})")
    _check_plugin(f"{path}.aggregator", "aggregators", b.aggregator)
    for key, kind, name in (("params", "estimators", b.type), ("aggregator_params", "aggregators", b.aggregator)):
        raw = getattr(b, key)
        if raw is not None and name is None:
            _bad(f"{path}.{key}", f"params need the {kind[:-1]} they are for: give {path.rsplit('.', 1)[-1]}."
                                  f"{'type' if key == 'params' else 'aggregator'} too")
        if raw is not None:
            plugin_params(kind, name, raw, f"{path}.{key}")
    if b.outlier_prob is not None and not 0 < b.outlier_prob < 0.5:
        _bad(f"{path}.outlier_prob", f"must be in (0, 0.5), got {b.outlier_prob}")
    c = b.clipping_value
    if c is not None:
        if not math.isfinite(c):
            _bad(f"{path}.clipping_value", f"must be a finite number, got {c}")
        if side == "max" and not c > 0:
            _bad(f"{path}.clipping_value", f"must be above 0 (the max is clipped at it), got {c}")
        if side == "min" and c > 0:
            _bad(f"{path}.clipping_value", f"must be 0 or below (the min is clipped at it and the range "
                                           f"holds 0), got {c}")


def border_plugin_params(border: RangeBorder, side: str) -> dict:
    """What a border's ``params`` and ``aggregator_params`` give the estimator's and the aggregator's
    constructors (checked when the params were validated): ``{"params": ..., "aggregator_params": ...}``
    with the values that differ from the declared defaults, for the keys the border gives."""
    out = {}
    for key, kind, name in (("params", "estimators", border.type),
                            ("aggregator_params", "aggregators", border.aggregator)):
        raw = getattr(border, key)
        if raw:
            out[key] = plugin_params(kind, name, raw, f"range_estimator.{side}.{key}")
    return out
