"""MinMaxQuantization's range estimator configuration: POT's default estimators and aggregators per
scheme, the config's ``range_estimator`` (preset, then the ``min``/``max`` borders with their estimator
and aggregator params) merged over them, and the statistic request of a border."""
from ovquant.statistics import Statistic, TensorRef

from .params import border_plugin_params


def default_estimators(kind: str, mode: str, granularity: str) -> dict:
    """POT's default (type, aggregator) per side."""
    if kind == "weights":
        if mode == "symmetric":
            return {"max": {"type": "abs_max", "aggregator": "max"}}
        return {"min": {"type": "min", "aggregator": "min"}, "max": {"type": "max", "aggregator": "max"}}
    if granularity == "perchannel":
        return {"min": {"type": "min", "aggregator": "min"},
                "max": {"type": "abs_max" if mode == "symmetric" else "max", "aggregator": "max"}}
    if mode == "symmetric":
        return {"min": {"type": "min", "aggregator": "min"}, "max": {"type": "abs_max", "aggregator": "mean"}}
    return {"min": {"type": "min", "aggregator": "mean"}, "max": {"type": "max", "aggregator": "mean"}}


def estimator_config(params, kind: str, mode: str, granularity: str) -> dict:
    """Defaults, then ``range_estimator.preset``, then the user's min/max entries (merged)."""
    cfg = default_estimators(kind, mode, granularity)
    cfg.setdefault("min", {"type": "min", "aggregator": "min"})
    tq = getattr(params, kind, None)
    re_ = (tq.range_estimator if tq is not None and tq.range_estimator is not None else params.range_estimator)
    if re_ is None:
        return cfg
    if re_.preset == "quantile":
        cfg["min"] = {**cfg["min"], "type": "quantile", "outlier_prob": 1e-4}
        cfg["max"] = {**cfg["max"], "type": "abs_quantile" if mode == "symmetric" else "quantile", "outlier_prob": 1e-4}
    for side in ("min", "max"):
        user = getattr(re_, side)
        if user is not None:
            cfg[side] = {**cfg[side], **{k: v for k, v in (("type", user.type), ("aggregator", user.aggregator),
                                                          ("outlier_prob", user.outlier_prob),
                                                          ("clipping_value", user.clipping_value)) if v is not None}}
            cfg[side].update(border_plugin_params(user, side))
    return cfg


def border_statistic(tensor: TensorRef, side: str, spec: dict, axis) -> Statistic:
    """The statistic request of one border (``spec``: an entry of :func:`estimator_config`)."""
    est_params = {"side": side, **{k: spec[k] for k in ("outlier_prob",) if k in spec}, **spec.get("params", {})}
    return Statistic.make(tensor, spec["type"], spec.get("aggregator", "mean"), axis, est_params,
                          spec.get("aggregator_params"))
