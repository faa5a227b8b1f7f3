"""The Python API, in the style of ``nncf.quantize``::

    import ovquant
    q = ovquant.quantize(model, dataset, preset="mixed", subset_size=300)
"""
import json
import os
import time
import warnings
from typing import Any, Optional, Sequence

import openvino as ov

from .config import Config, load_config, normalize_model_type, unstructure
from .structure import structure_value
from .dataset import (DEFAULT_SUBSET_SIZE, ImageFolder, ImageOptions, held_back, open_source, parse_layout,  # noqa: F401
                      parse_values, preprocessing_warning, replayable)
from .engine import Engine
from .events import finish_run, writing_files
from . import __version__
from .errors import ConfigError, PluginError, QuantizationFailed
from .graph import stable_names
from .io import check_output, read_model, save_outputs
from .nncf_compat import NNCF_KEYWORDS, nncf_overrides  # noqa: F401 (re-exported)
from .bodies import if_nodes, quantize_if_bodies
from .output_check import (CHECK_SAMPLES, SANITY_RELATIVE_L2, check_device, check_output_error,  # noqa: F401
                           output_error)
from .pipeline import Pipeline
from .run_check import checked
from .steps import apply_overrides, default_algorithm, run_steps  # noqa: F401 (re-exported)
from .pot_keys import engine_settings, warn_unimplemented
from .registry import lookup



def build_pipeline(config: Any = None, *, pipeline: Optional[Sequence[str]] = None, strict: bool = False,
                   engine: Optional[Engine] = None, cache_dir: Optional[str] = None, disabled=(),
                   **overrides) -> Pipeline:
    """The pipeline a config describes. ``pipeline`` lists algorithm names to run instead of the
    config's (each gets the same params), e.g. ``["MinMaxQuantization"]``. ``config`` is not modified."""
    steps, device = run_steps(config, pipeline, overrides)
    target = overrides.pop("target_device", None) or device or "ANY"
    if "model_type" in overrides:
        overrides["model_type"] = normalize_model_type(structure_value(overrides["model_type"], Optional[str], "model_type"))
    steps = apply_overrides(steps, {**overrides, "target_device": target})
    inplace = all(getattr(p, "inplace_statistics", True) is not False for _, p in steps)
    cfg = config if isinstance(config, Config) else None
    warn_unimplemented(steps, cfg.compression if cfg else None)
    return Pipeline(steps, target_device=target, strict=strict, disabled=disabled,
                    engine=engine or Engine(inplace_statistics=inplace, cache_dir=cache_dir,
                                            **engine_settings(cfg.engine if cfg else None)))


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
                         _body: bool = False, **overrides) -> tuple:
    """Like :func:`quantize`, and also return the run report (quantizers, stage times, effective
    settings and, with ``error_samples``, the INT8-vs-FP32 error of each output on that many samples
    that the statistics did not see, where the data has them). ``sensitivity=True`` adds each
    quantizer's share of the output error (``report["sensitivity"]``, :mod:`ovquant.sensitivity`);
    ``max_output_error=X`` reverts the worst quantizers to float until every output's relative L2
    error is within X on ``sensitivity_samples`` held-back samples (``report["output_error_control"]``)."""
    model = _as_model(model)
    if isinstance(config, (str, os.PathLike)):
        config = load_config(os.fspath(config))   # loaded (and its params validated) once
    overrides, off = nncf_overrides(overrides)
    implicit = subset_size is None and "stat_subset_size" not in overrides and not _config_sets_subset(config)
    if implicit:
        subset_size = DEFAULT_SUBSET_SIZE   # NNCF's and the CLI's default
    if subset_size is not None:
        overrides["stat_subset_size"] = structure_value(subset_size, int, "subset_size")
    pipe = build_pipeline(config, pipeline=pipeline, strict=strict, engine=engine, cache_dir=cache_dir,
                          disabled=off, **overrides)
    data = replayable(open_source(calibration_dataset, list(model.inputs), image))   # one reader for every stage
    with warnings.catch_warnings():
        if implicit:   # fewer samples than the default 300 is no news (NNCF says nothing either)
            warnings.filterwarnings("ignore", message=r"stat_subset_size is \d+ but the data has only")
        q, report = pipe.run(model.clone(), data, body=_body)
        if if_nodes(q):
            report["if_bodies"] = _quantize_bodies(model, q, data, report, config, subset_size, dict(
                pipeline=pipeline, strict=strict, engine=engine, cache_dir=cache_dir, **overrides))
    if isinstance(data, ImageFolder) and preprocessing_warning(data):   # once the images were read: an image
        warnings.warn(preprocessing_warning(data), stacklevel=2)         # that cannot be is the one line
    compress_weights(q)
    stable_names(q, {n.get_friendly_name() for n in model.get_ordered_ops()})
    if not _body and not any(a.get("whole_model_float") for a in report.get("algorithms", [])):
        q = checked(model, q, data, check_on or "CPU", report)   # never a model that does not run (core/run_check.py)
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


def _quantize_bodies(model: ov.Model, q: ov.Model, data: Any, report: dict, config: Any, subset_size, kw: dict) -> list:
    """The If bodies of ``q``, each branch through the same pipeline on the samples that take it
    (core/bodies.py); none where an algorithm kept the whole model in float (``whole_model_float``)."""
    floated = [a["name"] for a in report.get("algorithms", []) if a.get("whole_model_float")]
    if floated:
        return [{"summary": f"not quantized: {floated[0]} kept the whole model in float"}]
    kw.pop("stat_subset_size", None)

    def quantize_body(body, rows):
        with writing_files(), warnings.catch_warnings():   # a part of this run: no run_finished of its own
            warnings.filterwarnings("ignore", message="the model has no op that target")
            return quantize_with_report(body, rows, config, subset_size=len(rows), _body=True, **kw)
    return quantize_if_bodies(model, q, data, subset_size, quantize_body)


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
    a params dict, or the default algorithm's params object. Keyword overrides set params, e.g.
    ``preset="mixed"``, ``subset_size=300``, ``target_device="CPU"``, ``model_type="transformer"``,
    ``ignored={"scope": ["conv1"]}``; ``pipeline=["MinMaxQuantization"]`` runs other algorithms;
    ``cache_dir=PATH`` keeps per-sample statistics there so that reruns skip calibration inference.

    The returned model has been compiled and run on the first calibration sample: one the device refuses,
    or whose outputs are not finite where FP32's are, raises :class:`~ovquant.errors.QuantizationFailed`
    (naming the quantizer to leave in float, where one is to blame).
    """
    return quantize_with_report(model, calibration_dataset, config, **kwargs)[0]


def _config_sets_subset(config: Any) -> bool:
    """Whether a config object or dict names ``stat_subset_size`` itself (then it rules)."""
    if config is None:
        return False
    text = repr(unstructure(config) if not isinstance(config, dict) else config)
    return "stat_subset_size" in text and "'stat_subset_size': None" not in text


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
        written = json.load(f)
    try:
        finish_run(written, result)
    except PluginError as exc:   # an observer's failure does not undo a run whose files are committed
        warnings.warn(f"{exc}; the output was written", stacklevel=2)
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
    bodies = [e for e in report.get("if_bodies", []) if "branch" in e]
    if bodies:
        fq = sum(e.get("n_fake_quantize", 0) for e in bodies)
        w = sum(e.get("n_int8_weights", 0) for e in bodies)
        floats = [f"{e['if']}/{e['branch']}" for e in bodies if not e.get("n_fake_quantize") and not e.get("n_int8_weights")]
        lines.append(f"of those in If bodies: {fq} FakeQuantize op(s) and {w} int8 weight(s), in {len(bodies) - len(floats)} "
                     f"of {len(bodies)} branches" + (f"; float: {', '.join(floats[:5])}" if floats else ""))
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
    from .structure import _check_plugin

    _check_plugin("--target", "hw_targets", target_device)   # named as the user gave it, before reading anything
    extra = {"ignored": ignored, **more} if ignored else dict(more)
    return _run_and_save(model, weights, data, None, output_dir, name, strict, progress, use_cache, force=force,
                         image=image, overwrite=overwrite, preset=preset, stat_subset_size=subset_size, target_device=target_device,
                         model_type=model_type, **extra)
