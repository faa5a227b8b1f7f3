"""AccuracyAwareQuantization, POT's algorithm name: ``base_algorithm`` (DefaultQuantization), then
AccuracyControl, which reverts the fewest quantizers to float so that the user's metric drops by at
most ``maximal_drop``.

Math (see :mod:`ovquant.accuracy_control`): with ``m`` the metric (higher is better), FP32 the model
with every FakeQuantize removed, and the quantizers ranked by their alone-enabled output error
``E_i = mean_k rel_L2_k^2`` on the ranking samples (:mod:`ovquant.sensitivity`), find the smallest
``k`` with ``drop(top k reverted) <= maximal_drop``, ``drop = m_fp32 - m`` (``absolute``) or
``(m_fp32 - m) / |m_fp32|`` (``relative``), probing ``k = 1, 3, 7, ...`` then bisecting.

The metric comes from Python: ``metric`` is a callable ``fn(compiled_model, validation_data) -> float``
(a config built in Python), or ``"package.module:function"`` naming one (a JSON config; a plugin
package can ship the function). ``validation_data`` is given to it unchanged; where it is a path or a
Dataset, its model inputs are also the ranking samples (``ranking_subset_size`` of them).
"""
import warnings
import importlib
import time
from typing import Any, Optional

import attrs

from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.plugins.algorithms.params import QuantizationParams, validate_quantization_params
from ovquant.errors import ConfigError


@attrs.define(kw_only=True)
class AccuracyAwareParams(QuantizationParams):
    """DefaultQuantization's params and POT's AccuracyAwareQuantization keys."""

    maximal_drop: float = 0.01
    drop_type: str = "absolute"
    base_algorithm: str = "DefaultQuantization"
    ranking_subset_size: int = 32
    max_iter_num: Optional[int] = None
    metric: Any = None
    validation_data: Any = None
    #: POT's keys of its own search that this search does not have: accepted, with a warning
    use_prev_if_drop_increase: Optional[bool] = None
    metric_subset_ratio: Optional[float] = None
    tune_hyperparams: Optional[bool] = None
    convert_to_mixed_preset: Optional[bool] = None
    annotation_free: Optional[bool] = None
    annotation_conf_threshold: Optional[float] = None
    metrics: Any = None


#: POT keys accepted for its config files that do not change what this algorithm does
POT_ONLY_KEYS = ("use_prev_if_drop_increase", "metric_subset_ratio", "tune_hyperparams", "convert_to_mixed_preset",
                 "annotation_free", "annotation_conf_threshold", "metrics")


def resolve_metric(metric: Any, path: str):
    """A callable, or ``"module:function"`` imported."""
    if callable(metric):
        return metric
    if not isinstance(metric, str) or ":" not in metric:
        raise ConfigError(f"{path}: give the metric as 'package.module:function' (or a callable from Python)")
    mod, _, attr = metric.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{path}: cannot import {metric!r}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"{path}: {metric!r} is not callable")
    return fn


class AccuracyAwareQuantization(Algorithm):
    """POT's AccuracyAwareQuantization: ``base_algorithm``, then :class:`AccuracyControl`."""

    name = "AccuracyAwareQuantization"
    params_class = AccuracyAwareParams

    @classmethod
    def steps_for(cls, params):
        return (getattr(params, "base_algorithm", None) or "DefaultQuantization", "AccuracyControl")

    @classmethod
    def validate_params(cls, p: AccuracyAwareParams, path: str) -> None:
        validate_quantization_params(p, path)
        for key in POT_ONLY_KEYS:
            if getattr(p, key) is not None:
                warnings.warn(f"{path}.{key}: POT's key has no effect here (ovquant reverts the quantizers the "
                              "sensitivity analysis ranks worst until the drop is within maximal_drop)", stacklevel=2)
        if not p.maximal_drop >= 0:
            raise ConfigError(f"{path}.maximal_drop: must be >= 0, got {p.maximal_drop}")
        if p.drop_type not in ("absolute", "relative"):
            raise ConfigError(f"{path}.drop_type: expected 'absolute' or 'relative', got {p.drop_type!r}")
        if p.ranking_subset_size < 1:
            raise ConfigError(f"{path}.ranking_subset_size: must be at least 1, got {p.ranking_subset_size}")
        if p.base_algorithm in ("AccuracyAwareQuantization", "AccuracyControl"):
            raise ConfigError(f"{path}.base_algorithm: {p.base_algorithm!r} cannot be its own base")
        if p.metric is None:
            raise ConfigError(f"{path}.metric: AccuracyAwareQuantization needs a metric "
                              "('package.module:function', or a callable from Python)")
        resolve_metric(p.metric, f"{path}.metric")
        if p.validation_data is None:
            raise ConfigError(f"{path}.validation_data: AccuracyAwareQuantization needs validation data")


def _ranking_rows(data: Any, inputs: list, n: int) -> list:
    from ovquant.dataset import open_source, take

    if isinstance(data, str) or hasattr(data, "transform_fn") or hasattr(data, "get_inference_data"):
        items = data.get_inference_data() if hasattr(data, "get_inference_data") else data
        return list(take(open_source(items, inputs), n))
    raise ConfigError("validation_data: to rank quantizers, give a path (.npz, .npy, image folder) or an "
                      "ovquant.Dataset whose transform gives model inputs")


class AccuracyControl(Algorithm):
    """The second step of AccuracyAwareQuantization (see the module docstring)."""

    name = "AccuracyControl"
    params_class = AccuracyAwareParams
    new_stage = True

    def apply(self, graph, stats) -> dict:
        from ovquant.accuracy_control import Validator, control_metric, revert, validation_items
        from ovquant.sensitivity import find_quantizers

        p = self.params
        t0 = time.perf_counter()
        model = graph.model
        fp32 = model.clone()
        revert(fp32, [q["name"] for q in find_quantizers(fp32)])
        validator = Validator(resolve_metric(p.metric, "metric"), validation_items(p.validation_data))
        rows = _ranking_rows(p.validation_data, list(model.inputs), p.ranking_subset_size)
        _, entry = control_metric(fp32, model, validator, rows, float(p.maximal_drop), p.drop_type, p.max_iter_num)
        entry["validation_runs"] = validator.runs
        entry["validation_seconds"] = round(validator.seconds, 3)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        entry["summary"] = (f"reverted {entry['n_reverted']} quantizer(s) to float; metric {entry['metric']:.4g} "
                            f"vs FP32 {entry['metric_fp32']:.4g} ({p.drop_type} drop {entry['drop']:.4g}, "
                            f"max {p.maximal_drop:g}) after {validator.runs} validation runs")
        return entry


@hookimpl
def register_algorithms(register):
    register(AccuracyAwareQuantization)
    register(AccuracyControl)
