"""The Python API, in the style of ``nncf.quantize``::

    import ovquant
    q = ovquant.quantize(model, dataset, preset="mixed", subset_size=300)
"""
import json
import os
import time
import warnings
from typing import Any, Optional, Sequence

import attrs
import numpy as np
import openvino as ov

from .config import (Config, Ignored, QuantizationParams, RangeEstimatorConfig, TensorQuantization, config_from_dict, load_config, normalize_model_type,
                     parse_params, structure, unstructure)
from .dataset import (FeedBuilder, ImageFolder, ImageOptions, held_back, open_source, parse_layout, parse_values,
                      preprocessing_warning, take)
from .engine import Engine
from .events import finish_run, writing_files
from . import __version__
from .errors import ConfigError, QuantizationFailed
from .graph import stable_names
from .io import check_output, read_model, save_outputs
from .pipeline import Pipeline
from .pot_keys import engine_settings, warn_unimplemented
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
                   engine: Optional[Engine] = None, cache_dir: Optional[str] = None, disabled=(),
                   **overrides) -> Pipeline:
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
    cfg = config if isinstance(config, Config) else None
    warn_unimplemented(steps, cfg.compression if cfg else None)
    return Pipeline(steps, target_device=target, strict=strict, disabled=disabled,
                    engine=engine or Engine(inplace_statistics=inplace, cache_dir=cache_dir,
                                            **engine_settings(cfg.engine if cfg else None)))


#: NNCF's keywords of ``nncf.quantize`` that have an ovquant equivalent (see :func:`quantize`)
NNCF_KEYWORDS = ("preset", "target_device", "subset_size", "fast_bias_correction", "model_type", "ignored_scope",
                 "mode", "advanced_parameters")
DEFAULT_SUBSET_SIZE = 300


def _enum_value(v: Any) -> Any:
    """NNCF passes enums (``nncf.QuantizationPreset.MIXED``, ``nncf.TargetDevice.CPU``): their value."""
    return getattr(v, "value", v) if v is not None and not isinstance(v, (str, int, float, bool, dict, list)) else v


def _ignored_from_scope(scope: Any) -> dict:
    """``ignored_scope`` as NNCF gives it (``nncf.IgnoredScope`` or a dict of names, patterns, types) ->
    ovquant's ``ignored`` params (exact names and regexes in ``scope``, op types in ``operations``)."""
    if isinstance(scope, dict):
        fields = dict(scope)
    elif isinstance(scope, (list, tuple)):
        fields = {"names": list(scope)}
    else:
        fields = {k: getattr(scope, k) for k in ("names", "patterns", "types", "subgraphs", "validate")
                  if hasattr(scope, k)}
        if not fields:
            raise ConfigError(f"ignored_scope: expected nncf.IgnoredScope, a dict or a list of names, "
                              f"got {type(scope).__name__}")
    unknown = set(fields) - {"names", "patterns", "types", "subgraphs", "validate"}
    if unknown:
        raise ConfigError(f"ignored_scope.{sorted(unknown)[0]}: unknown key (known: names, patterns, types, validate)")
    if fields.get("subgraphs"):
        raise ConfigError("ignored_scope.subgraphs: not supported by ovquant (give names, patterns or types)")
    import re

    names = [re.escape(n) for n in fields.get("names") or []]
    return {"scope": names + list(fields.get("patterns") or []),
            "operations": [{"type": t} for t in fields.get("types") or []]}


def _nncf_overrides(kwargs: dict) -> tuple:
    """Translate NNCF's keywords into ovquant params; returns (overrides, switched-off api switches)."""
    out, off = {}, set()
    for k, v in list(kwargs.items()):
        v = _enum_value(v)
        if k == "mode":
            if v is not None:
                raise ConfigError(f"mode: {v!r} (NNCF's FP8/FP4 modes) has no ovquant equivalent; leave it unset")
        elif k == "advanced_parameters":
            if v is not None:
                raise ConfigError("advanced_parameters: NNCF's advanced parameters have no ovquant equivalent; "
                                  "give ovquant params as keywords or a config instead")
        elif k == "fast_bias_correction":
            if v is None:
                off.add("fast_bias_correction")
            elif v is False:
                raise ConfigError("fast_bias_correction: False (NNCF's BiasCorrection) has no ovquant "
                                  "equivalent; ovquant corrects biases with FastBiasCorrection "
                                  "(bias_correction_form='exact' gives each layer's exact shift)")
            elif v is not True:
                raise ConfigError(f"fast_bias_correction: expected True, False or None, got {v!r}")
        elif k == "ignored_scope":
            if v is not None:
                out["ignored"] = _ignored_from_scope(v)
        elif k == "subset_size":
            out["stat_subset_size"] = v
        elif v is not None or k not in ("preset", "target_device", "model_type"):
            out[k] = v
    return out, off


def _as_model(model: Any) -> ov.Model:
    if isinstance(model, ov.Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return read_model(os.fspath(model))
    raise ConfigError(f"model: expected an openvino.Model or a model file path, got {type(model).__name__}")


def quantize_with_report(model: Any, calibration_dataset: Any, config: Any = None, *,
                         pipeline: Optional[Sequence[str]] = None, strict: bool = False,
                         subset_size: Optional[int] = None, engine: Optional[Engine] = None,
                         error_samples: int = 0, cache_dir: Optional[str] = None,
                         image: Optional[ImageOptions] = None, check_on: Optional[str] = None,
                         raise_on_failure: bool = False, sensitivity: bool = False,
                         max_output_error: Optional[float] = None, sensitivity_samples: int = 32,
                         **overrides) -> tuple:
    """Like :func:`quantize`, and also return the run report (quantizers, stage times, effective
    settings and, with ``error_samples``, the INT8-vs-FP32 error of each output on that many samples
    that the statistics did not see, where the data has them). ``sensitivity=True`` adds each
    quantizer's share of the output error (``report["sensitivity"]``, :mod:`ovquant.sensitivity`);
    ``max_output_error=X`` reverts the worst quantizers to float until every output's relative L2
    error is within X on ``sensitivity_samples`` held-back samples (``report["output_error_control"]``)."""
    model = _as_model(model)
    overrides, off = _nncf_overrides(overrides)
    implicit = subset_size is None and "stat_subset_size" not in overrides and not _config_sets_subset(config)
    if implicit:
        subset_size = DEFAULT_SUBSET_SIZE   # NNCF's and the CLI's default
    if subset_size is not None:
        overrides["stat_subset_size"] = subset_size
    pipe = build_pipeline(config, pipeline=pipeline, strict=strict, engine=engine, cache_dir=cache_dir,
                          disabled=off, **overrides)
    data = open_source(calibration_dataset, list(model.inputs), image)   # one reader for every stage
    if isinstance(data, ImageFolder) and preprocessing_warning(data):
        warnings.warn(preprocessing_warning(data), stacklevel=2)
    with warnings.catch_warnings():
        if implicit:   # fewer samples than the default 300 is no news (NNCF says nothing either)
            warnings.filterwarnings("ignore", message=r"stat_subset_size is \d+ but the data has only")
        q, report = pipe.run(model.clone(), data)
    compress_weights(q)
    stable_names(q, {n.get_friendly_name() for n in model.get_ordered_ops()})
    if sensitivity or max_output_error is not None:
        from .accuracy_control import analyze_quantized

        rows, unseen = held_back(data, pipe.used_indices, pipe.used_count, sensitivity_samples)
        q = analyze_quantized(model, q, rows, report, sensitivity=sensitivity, max_output_error=max_output_error,
                              held=unseen)
    report["pipeline"] = pipe.names
    report["settings"] = {**pipe.settings(), "data": _describe_source(calibration_dataset, data)}
    if isinstance(data, ImageFolder):
        report["settings"]["images"] = data.options.describe()
    if error_samples:
        samples, unseen = held_back(data, pipe.used_indices, pipe.used_count, error_samples)
        report["output_error"] = output_error(model, q, samples, error_samples, device=check_on or "CPU",
                                              raise_on_failure=raise_on_failure)
        report["output_error_samples"] = "held back" if unseen else "calibration"
    if isinstance(data, ImageFolder):
        _fold_image_warnings(data)
    finish_run(report)   # (a run that writes files sends it once they exist)
    return q, report


def _describe_source(given: Any, data: Any) -> str:
    """The calibration data as the report names it: the path, or the kind of object and its size."""
    if isinstance(given, (str, os.PathLike)):
        return os.path.abspath(os.fspath(given))
    size = f" of {len(data)} samples" if hasattr(data, "__len__") else ""
    return f"{type(given).__module__}.{type(given).__qualname__}{size}"


def _fold_image_warnings(folder: ImageFolder) -> None:
    if folder.warnings:
        warnings.warn(f"{len(folder.warnings)} image-library warning(s) while reading {folder.path}; "
                      f"first: {folder.warnings[0][:200]}", stacklevel=3)
        folder.warnings.clear()


def compress_weights(model: ov.Model) -> ov.Model:
    """Fold weight FakeQuantizes into int8 Constants + Convert (+ Subtract) + Multiply, in place."""
    from openvino._offline_transformations import compress_quantize_weights_transformation

    compress_quantize_weights_transformation(model)
    return model


def quantize(model: Any, calibration_dataset: Any, config: Any = None, **kwargs) -> ov.Model:
    """Quantize ``model`` (an ``openvino.Model``, which is not modified, or a model file path) with
    calibration data and return the INT8 ``openvino.Model``.

    NNCF's keywords work as in ``nncf.quantize``: ``preset``, ``target_device``, ``subset_size`` (default
    300, as NNCF and the CLI), ``fast_bias_correction`` (True; None leaves biases as they are),
    ``model_type``, ``ignored_scope`` (``nncf.IgnoredScope`` or a dict of ``names``, ``patterns`` and
    ``types``); their enums are accepted. Any other keyword must name an ovquant param.

    ``calibration_dataset`` is an iterable of samples, an :class:`ovquant.Dataset`, an array (one sample
    per row), or a path (folder of images, .npy, .npz). ``config`` is a POT config file path or dict,
    a params dict, or :class:`~ovquant.config.QuantizationParams`. Keyword overrides set params, e.g.
    ``preset="mixed"``, ``subset_size=300``, ``target_device="CPU"``, ``model_type="transformer"``,
    ``ignored={"scope": ["conv1"]}``; ``pipeline=["MinMaxQuantization"]`` runs other algorithms;
    ``cache_dir=PATH`` keeps per-sample statistics there so that reruns skip calibration inference.
    """
    return quantize_with_report(model, calibration_dataset, config, **kwargs)[0]


def _config_sets_subset(config: Any) -> bool:
    """Whether a config object or dict names ``stat_subset_size`` itself (then it rules)."""
    if config is None:
        return False
    if isinstance(config, (str, os.PathLike)):
        config = load_config(os.fspath(config))
    text = repr(unstructure(config) if not isinstance(config, dict) else config)
    return "stat_subset_size" in text and "'stat_subset_size': None" not in text


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
        msg = next((l.strip() for l in str(exc).splitlines() if l.strip() and "Exception from" not in l),
                   type(exc).__name__)
        if raise_on_failure:
            raise QuantizationFailed(f"the quantized model does not run on {device}: {msg[:200]}") from None
        return [{"error": f"{type(exc).__name__}: {msg[:200]}"}]
    with np.errstate(all="ignore"):   # NaN outputs are reported in the numbers, not as warnings
        return _output_error(fp32, samples, feeds, cf.create_infer_request(), rq)


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


def _resolve(path: Optional[str], base_dir: str) -> Optional[str]:
    if path is None or os.path.isabs(path) or os.path.exists(path):
        return path
    cand = os.path.join(base_dir, path)
    return cand if os.path.exists(cand) else path


def _run_and_save(model_path, weights, data, config, output_dir, name, strict, progress, use_cache=True,
                  force: bool = False, image: Optional[ImageOptions] = None, overwrite: bool = False,
                  report_html: bool = False,
                  **overrides) -> dict:
    from .cache import default_root
    from .progress import progress_bar

    t0 = time.perf_counter()
    model = read_model(model_path, weights)
    name = name or os.path.splitext(os.path.basename(model_path))[0]
    inputs = [model_path, weights, data]
    check_output(output_dir, name, inputs, overwrite, html=report_html)   # before calibration: nothing of the user's replaced
    device, note = check_device(_target_of(config, overrides))
    with progress_bar(enabled=progress), writing_files():
        q, report = quantize_with_report(model, data, config, strict=strict, error_samples=CHECK_SAMPLES,
                                         image=image, check_on=device, raise_on_failure=not force,
                                         cache_dir=default_root() if use_cache else None,
                                         sensitivity=report_html, **overrides)
    problem = check_output_error(report["output_error"])
    report["output_check"] = {"device": note, "samples": report.pop("output_error_samples"),
                              "sanity_relative_l2": SANITY_RELATIVE_L2, "problem": problem,
                              "forced": bool(problem and force)}
    if problem and not force:
        raise QuantizationFailed(f"{problem}; nothing was written (--force writes it anyway)")
    report["model"] = os.path.abspath(model_path)
    report["versions"] = {"ovquant": __version__, "openvino": ov.get_version()}
    report["total_seconds"] = round(time.perf_counter() - t0, 3)
    from .accuracy_control import control_summary

    report["summary"] = summarize(q, report) + control_summary(report)
    page = None
    if report_html:   # committed with the model and report, under the same ownership checks
        from .html_report import render

        page = render(report["sensitivity"], name)
    result = save_outputs(q, output_dir, name, report, overwrite=overwrite, inputs=inputs, html=page)
    with open(result["report"], encoding="utf-8") as f:   # the event carries the report as written
        finish_run(json.load(f), result)
    result["summary"] = report["summary"]
    return result


def _target_of(config: Any, overrides: dict) -> Optional[str]:
    """The target device a run will use (keyword, else the config's, else ANY), for the output check."""
    if overrides.get("target_device"):
        return overrides["target_device"]
    if isinstance(config, Config):
        for a in config.compression.algorithms:
            if getattr(a.params, "target_device", None):
                return a.params.target_device
        return config.compression.target_device
    return None


def summarize(q: ov.Model, report: dict) -> list:
    """A few lines for the console: quantizers by kind, output error, time, slowest stage."""
    from .inspect import quantizers

    kinds: dict = {}
    for item in quantizers(q):
        kinds[item["kind"]] = kinds.get(item["kind"], 0) + 1
    n = sum(kinds.values())
    lines = [f"{n} quantizers ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items())) or 'none'}) in "
             f"{report.get('total_seconds', report.get('seconds', 0)):.1f} s"]
    timed = [(st["seconds"], f"statistics pass {st['stage']}")
             for st in report.get("stages", [])]
    timed += [(a["seconds"], a["name"]) for a in report.get("algorithms", [])]
    if timed:
        secs, what = max(timed)
        lines[0] += f"; slowest stage: {what}, {secs:.1f} s"
    where = report.get("output_check", {}).get("samples", "calibration")
    for e in report.get("output_error", []):
        if "output" in e:
            rel, cos = e.get("relative_l2"), e.get("cosine_mean")
            lines.append(f"output {e['output']!r} vs FP32 on {e['samples']} {where} samples: relative L2 "
                         f"{'non-finite' if rel is None else f'{rel:.4f}'}, cosine "
                         f"{'non-finite' if cos is None else f'{cos:.5f}'}")
    if report.get("output_check", {}).get("forced"):
        lines.append(f"warning: {report['output_check']['problem']} (written because of --force)")
    return lines


def quantize_from_config(path: str, output_dir: Optional[str] = None, use_cache: bool = True,
                         strict: bool = False, progress: bool = True, force: bool = False,
                         overwrite: bool = False, **extra) -> dict:
    """``ovquant quantize -c config.json``: the model, data and algorithms all come from the file
    (``extra``: ``report_html``, ``max_output_error``)."""
    cfg = load_config(path)
    if cfg.model is None:
        raise ConfigError("model: the config needs a 'model' section with the model path")
    if cfg.engine is None or not cfg.engine.data_source:
        raise ConfigError("engine.data_source: the config needs calibration data (a folder, .npy or .npz)")
    model_path = _resolve(cfg.model.model, cfg.base_dir)
    weights = _resolve(cfg.model.weights, cfg.base_dir)
    data = _resolve(cfg.engine.data_source, cfg.base_dir)
    e = cfg.engine
    image = ImageOptions(layout=parse_layout(e.layout, "engine.layout"),
                         mean_values=parse_values(e.mean_values, "engine.mean_values"),
                         scale_values=parse_values(e.scale_values, "engine.scale_values"),
                         reverse_input_channels=bool(e.reverse_input_channels))
    return _run_and_save(model_path, weights, data, cfg, output_dir or "results", cfg.model.model_name,
                         strict, progress, use_cache, force=force, image=image, overwrite=overwrite, **extra)


def quantize_from_args(model: str, data: str, weights: Optional[str] = None, preset: str = "performance",
                       subset_size: Optional[int] = 300, target_device: str = "ANY", model_type=None,
                       output_dir: str = "results", name: Optional[str] = None, use_cache: bool = True,
                       strict: bool = False, progress: bool = True, force: bool = False,
                       image: Optional[ImageOptions] = None, ignored: Optional[dict] = None,
                       overwrite: bool = False, **more) -> dict:
    """``ovquant quantize -m model.xml --data PATH ...``: the default algorithm with these settings
    (``more``: ``report_html``, ``max_output_error``)."""
    extra = {"ignored": ignored, **more} if ignored else dict(more)
    return _run_and_save(model, weights, data, None, output_dir, name, strict, progress, use_cache, force=force,
                         image=image, overwrite=overwrite, preset=preset, stat_subset_size=subset_size, target_device=target_device,
                         model_type=model_type, **extra)
