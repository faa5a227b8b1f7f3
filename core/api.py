"""The Python API, in the style of ``nncf.quantize``::

    import ovquant
    q = ovquant.quantize(model, dataset, preset="mixed", subset_size=300)
"""
import os
import time
from typing import Any, Optional, Sequence

import attrs
import numpy as np
import openvino as ov

from .config import (Config, Ignored, QuantizationParams, RangeEstimatorConfig, TensorQuantization, config_from_dict, load_config, normalize_model_type,
                     parse_params, structure)
from .dataset import FeedBuilder, open_source, take
from .engine import Engine
from .errors import ConfigError
from .graph import stable_names
from .io import read_model, save_outputs
from .pipeline import Pipeline
from .registry import lookup

_OVERRIDE_ALIASES = {"subset_size": "stat_subset_size"}
_NESTED = {"ignored": Ignored, "weights": TensorQuantization, "activations": TensorQuantization,
           "range_estimator": RangeEstimatorConfig}


def default_algorithm() -> str:
    """The name of the registered algorithm marked ``is_default`` (what a bare quantize() runs)."""
    from .registry import get_registry

    names = [e.name for e in get_registry().entries["algorithms"].values() if getattr(e.obj, "is_default", False)]
    if len(names) != 1:
        raise ConfigError(f"no single default algorithm is registered (found: {', '.join(names) or 'none'}); "
                          "name one in the config")
    return names[0]


def _params_from(config: Any) -> tuple:
    """(list of (algorithm name, params), compression-level target_device) from what a user passes."""
    if config is None:
        return [(default_algorithm(), QuantizationParams())], None
    if isinstance(config, Config):
        return [(a.name, a.params) for a in config.compression.algorithms], config.compression.target_device
    if isinstance(config, QuantizationParams):
        return [(default_algorithm(), config)], None
    if isinstance(config, (str, os.PathLike)):
        return _params_from(load_config(os.fspath(config)))
    if isinstance(config, dict):
        if "compression" in config or "model" in config or "engine" in config:
            return _params_from(config_from_dict(config))
        if "algorithms" in config:
            return _params_from(config_from_dict({"compression": config}))
        return [(default_algorithm(), structure(config, QuantizationParams, "params"))], None
    raise ConfigError(f"config of type {type(config).__name__} is not supported (a path, a dict or QuantizationParams)")


def _apply_overrides(steps: list, overrides: dict) -> list:
    for k in overrides:
        key = _OVERRIDE_ALIASES.get(k, k)
        if not any(isinstance(p, dict) or hasattr(p, key) for _, p in steps) and key not in attrs.fields_dict(QuantizationParams):
            raise ConfigError(f"{k}: unknown parameter (of {', '.join(n for n, _ in steps)})")
    out = []
    for name, params in steps:
        cls = lookup("algorithms", name)
        if overrides:
            raw = params if isinstance(params, dict) else None
            if raw is not None:
                params = dict(raw)
                params.update({_OVERRIDE_ALIASES.get(k, k): v for k, v in overrides.items()})
            else:
                for k, v in overrides.items():
                    k = _OVERRIDE_ALIASES.get(k, k)
                    if not hasattr(params, k):
                        continue   # a setting for the other steps (checked below that some step has it)
                    if isinstance(v, dict) and k in _NESTED:
                        v = structure(v, _NESTED[k], k)
                    setattr(params, k, v)
        out.append((name, parse_params(cls, params, f"{name}.params")))
    return out


def build_pipeline(config: Any = None, *, pipeline: Optional[Sequence[str]] = None, strict: bool = False,
                   engine: Optional[Engine] = None, cache_dir: Optional[str] = None, **overrides) -> Pipeline:
    """The pipeline a config describes. ``pipeline`` lists algorithm names to run instead of the
    config's (each gets the same params), e.g. ``["MinMaxQuantization"]``."""
    steps, device = _params_from(config) if config is not None or pipeline is None else ([], None)
    if pipeline is not None:
        base = steps[0][1] if steps else QuantizationParams()
        steps = [(name, base) for name in pipeline]
    target = overrides.pop("target_device", None) or device or "ANY"
    if "model_type" in overrides:
        overrides["model_type"] = normalize_model_type(overrides["model_type"])
    steps = _apply_overrides(steps, {**overrides, "target_device": target})
    inplace = all(getattr(p, "inplace_statistics", True) is not False for _, p in steps)
    return Pipeline(steps, target_device=target, strict=strict,
                    engine=engine or Engine(inplace_statistics=inplace, cache_dir=cache_dir))


def quantize_with_report(model: ov.Model, calibration_dataset: Any, config: Any = None, *,
                         pipeline: Optional[Sequence[str]] = None, strict: bool = False,
                         subset_size: Optional[int] = None, engine: Optional[Engine] = None,
                         error_samples: int = 0, cache_dir: Optional[str] = None, **overrides) -> tuple:
    """Like :func:`quantize`, and also return the run report (quantizers, stage times and, with
    ``error_samples``, the INT8-vs-FP32 error of each output on that many calibration samples)."""
    if subset_size is not None:
        overrides["stat_subset_size"] = subset_size
    pipe = build_pipeline(config, pipeline=pipeline, strict=strict, engine=engine, cache_dir=cache_dir, **overrides)
    shapes = [tuple(p.get_shape()) if p.get_partial_shape().is_static else None for p in model.inputs]
    data = open_source(calibration_dataset, shapes)   # read a file source once for every stage
    q, report = pipe.run(model.clone(), data)
    compress_weights(q)
    stable_names(q, {n.get_friendly_name() for n in model.get_ordered_ops()})
    report["pipeline"] = pipe.names
    if error_samples:
        report["output_error"] = output_error(model, q, data, error_samples)
    return q, report


def compress_weights(model: ov.Model) -> ov.Model:
    """Fold weight FakeQuantizes into int8 Constants + Convert (+ Subtract) + Multiply, in place."""
    from openvino._offline_transformations import compress_quantize_weights_transformation

    compress_quantize_weights_transformation(model)
    return model


def quantize(model: ov.Model, calibration_dataset: Any, config: Any = None, **kwargs) -> ov.Model:
    """Quantize ``model`` (an ``openvino.Model``; it is not modified) with calibration data and return
    the INT8 ``openvino.Model``.

    ``calibration_dataset`` is an iterable of samples, an :class:`ovquant.Dataset`, an array (one sample
    per row), or a path (folder of images, .npy, .npz). ``config`` is a POT config file path or dict,
    a params dict, or :class:`~ovquant.config.QuantizationParams`. Keyword overrides set params, e.g.
    ``preset="mixed"``, ``subset_size=300``, ``target_device="CPU"``, ``model_type="transformer"``,
    ``ignored={"scope": ["conv1"]}``; ``pipeline=["MinMaxQuantization"]`` runs other algorithms;
    ``cache_dir=PATH`` keeps per-sample statistics there so that reruns skip calibration inference.
    """
    return quantize_with_report(model, calibration_dataset, config, **kwargs)[0]


def output_error(fp32: ov.Model, q: ov.Model, data: Any, n: int = 8) -> list:
    """INT8-vs-FP32 error of each model output on the first ``n`` calibration samples."""
    core = ov.Core()
    try:
        shapes = [tuple(p.get_shape()) if p.get_partial_shape().is_static else None for p in fp32.inputs]
        samples = list(take(open_source(data, shapes), n))
        feeds = FeedBuilder(fp32.inputs)
        cf = core.compile_model(fp32, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        cq = core.compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as exc:  # the report must not fail the run
        return [{"error": f"{type(exc).__name__}: {exc}"}]
    rf, rq = cf.create_infer_request(), cq.create_infer_request()
    with np.errstate(all="ignore"):   # NaN outputs are reported in the numbers, not as warnings
        return _output_error(fp32, samples, feeds, rf, rq)


def _output_error(fp32, samples, feeds, rf, rq) -> list:
    out = []
    for k, o in enumerate(fp32.outputs):
        num = den = 0.0
        cos = []
        mx = 0.0
        for i, s in enumerate(samples):
            feed = feeds(s, i)
            a = np.asarray(rf.infer(feed)[k], np.float64).ravel()
            b = np.asarray(rq.infer(feed)[k], np.float64).ravel()
            num += float(((a - b) ** 2).sum())
            den += float((a ** 2).sum())
            mx = max(mx, float(np.abs(a - b).max()) if a.size else 0.0)
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos.append(float(a @ b / (na * nb)) if na > 0 and nb > 0 else 1.0)
        name = o.get_any_name() if o.get_names() else o.get_node().get_friendly_name()
        out.append({"output": name, "samples": len(samples), "relative_l2": round((num / den) ** 0.5 if den else 0.0, 6),
                    "max_abs": round(mx, 6), "cosine_mean": round(float(np.mean(cos)) if cos else 1.0, 6)})
    return out


def _resolve(path: Optional[str], base_dir: str) -> Optional[str]:
    if path is None or os.path.isabs(path) or os.path.exists(path):
        return path
    cand = os.path.join(base_dir, path)
    return cand if os.path.exists(cand) else path


def _run_and_save(model_path, weights, data, config, output_dir, name, strict, progress, use_cache=True,
                  **overrides) -> dict:
    from .cache import default_root

    from .progress import progress_bar

    t0 = time.perf_counter()
    model = read_model(model_path, weights)
    with progress_bar(enabled=progress):
        q, report = quantize_with_report(model, data, config, strict=strict, error_samples=8,
                                         cache_dir=default_root() if use_cache else None, **overrides)
    report["model"] = os.path.abspath(model_path)
    report["total_seconds"] = round(time.perf_counter() - t0, 3)
    name = name or os.path.splitext(os.path.basename(model_path))[0]
    return save_outputs(q, output_dir, name, report)


def quantize_from_config(path: str, output_dir: Optional[str] = None, use_cache: bool = True,
                         strict: bool = False, progress: bool = True) -> dict:
    """``ovquant quantize -c config.json``: the model, data and algorithms all come from the file."""
    cfg = load_config(path)
    if cfg.model is None:
        raise ConfigError("model: the config needs a 'model' section with the model path")
    if cfg.engine is None or not cfg.engine.data_source:
        raise ConfigError("engine.data_source: the config needs calibration data (a folder, .npy or .npz)")
    model_path = _resolve(cfg.model.model, cfg.base_dir)
    weights = _resolve(cfg.model.weights, cfg.base_dir)
    data = _resolve(cfg.engine.data_source, cfg.base_dir)
    return _run_and_save(model_path, weights, data, cfg, output_dir or "results", cfg.model.model_name,
                         strict, progress, use_cache)


def quantize_from_args(model: str, data: str, weights: Optional[str] = None, preset: str = "performance",
                       subset_size: Optional[int] = 300, target_device: str = "ANY", model_type=None,
                       output_dir: str = "results", name: Optional[str] = None, use_cache: bool = True,
                       strict: bool = False, progress: bool = True) -> dict:
    """``ovquant quantize -m model.xml --data PATH ...``: DefaultQuantization with these settings."""
    return _run_and_save(model, weights, data, None, output_dir, name, strict, progress, use_cache, preset=preset,
                         stat_subset_size=subset_size, target_device=target_device, model_type=model_type)
