"""The config model: the top level of POT's JSON config file as attrs classes, loaded with cattrs.

The file has three sections, ``model``, ``engine`` and ``compression`` (docs/config.md documents every
key). JSON with ``//`` and ``/* */`` comments loads (:mod:`ovquant.jsonc`). Every problem is reported as
one line naming the key path, e.g.::

    compression.algorithms[0].params.weights.range_estimator.max.type: unknown estimator 'maxx' (known: ...)

Core holds no algorithm's schema. Each algorithm declares its ``params_class`` (found in the plugin
registry) and an optional ``validate_params``, so built-in and third-party algorithms validate their own
keys the same way. What every algorithm may share is :class:`AlgorithmParams`; core checks those keys.
Plugin names are checked against the registry, never against a hard-coded list.

Params are parsed once: :func:`parse_params` remembers the objects it returned, and an object it
returned and that has not been changed since is returned as it is (not validated again).
"""
import os
import weakref
from typing import Any, Optional

import attrs

from .errors import ConfigError
from .jsonc import decode_text, parse_json_text, read_json, strip_comments  # noqa: F401 (re-exported)
from .pot_compat import POT_ONLY_ALGORITHMS, pot_compat  # noqa: F401 (re-exported)
from .structure import (MAX_ECHO, _bad, _check_plugin, _choice, _clip_text, _describe, _show,  # noqa: F401
                        structure, unstructure)

PRESETS = ("performance", "mixed", "accuracy")
POT_PRESET_ALIASES = ("symmetric", "asymmetric")   # POT's: performance and accuracy
MODES = ("symmetric", "asymmetric")
GRANULARITIES = ("pertensor", "perchannel")
MODEL_TYPES = ("transformer",)


# ---- what every algorithm shares ------------------------------------------------------------------
@attrs.define(kw_only=True)
class AlgorithmParams:
    """The params every algorithm may share, checked by core (:func:`validate_common`).

    * ``preset``: which scheme of the hardware target's presets quantizers take (the target JSON gives
      it its meaning; POT's ``symmetric``/``asymmetric`` are accepted for performance/accuracy);
    * ``stat_subset_size``: the samples of the algorithm's statistics pass (None: all);
    * ``shuffle_data``, ``seed``: POT's sampler (a seeded random subset instead of the first samples);
    * ``model_type``: None or ``transformer`` (case-insensitive; ``"None"`` is None);
    * ``target_device``: a registered hardware target (filled from ``compression`` when not given).

    An algorithm's ``params_class`` may subclass it (the built-ins do) or be any attrs class; a class
    that has a field of these names gets it checked and filled the same way.
    """

    preset: str = "performance"
    stat_subset_size: Optional[int] = None
    shuffle_data: bool = False
    seed: int = 0
    model_type: Optional[str] = None
    target_device: Optional[str] = None


# ---- sections ---------------------------------------------------------------------------------------
@attrs.define(kw_only=True)
class ModelConfig:
    model_name: Optional[str] = None   # None or "": the model file's stem, as POT
    model: str
    weights: Optional[str] = None


@attrs.define(kw_only=True)
class EngineConfig:
    type: str = "simplified"
    data_source: Optional[str] = None
    device: str = "CPU"
    layout: Optional[str] = None
    #: image folders: ``(pixel - mean_values) / scale_values`` per channel, RGB instead of BGR order
    mean_values: Any = None
    scale_values: Any = None
    reverse_input_channels: bool = False
    stat_requests_number: Optional[int] = None


@attrs.define(kw_only=True)
class AlgorithmConfig:
    name: str
    params: Any = attrs.Factory(dict)


@attrs.define(kw_only=True)
class CompressionConfig:
    target_device: str = "ANY"
    model_type: Optional[str] = None
    inplace_statistics: bool = True
    dump_intermediate_model: bool = False
    algorithms: list[AlgorithmConfig] = attrs.Factory(list)


@attrs.define(kw_only=True)
class Config:
    model: Optional[ModelConfig] = None
    engine: Optional[EngineConfig] = None
    compression: CompressionConfig = attrs.Factory(CompressionConfig)
    #: the directory relative paths in the file are resolved against (not a key of the file)
    base_dir: str = attrs.field(default=".", metadata={"internal": True})


# ---- loading -------------------------------------------------------------------------------------
def load_config(path: str) -> Config:
    """Load and fully validate a POT-style config file."""
    data = read_json(path)
    cfg = config_from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)))
    return cfg


def config_from_dict(data: Any, base_dir: str = ".") -> Config:
    data, optimizer = pot_compat(data)
    cfg = structure(data, Config)
    cfg.base_dir = base_dir
    validate_config(cfg)
    if optimizer is not None:   # after the algorithms: a TunableQuantization is named first
        name = optimizer.get("name") if isinstance(optimizer, dict) else None
        _bad("optimizer", f"POT's global optimizer{'' if name is None else ' ' + _show(name)} (a search over "
                          "quantization parameters) is not available in ovquant; remove the section")
    return cfg


# ---- semantic validation -------------------------------------------------------------------------
def normalize_model_type(value: Optional[str]) -> Optional[str]:
    if value is None or value.lower() in ("none", ""):
        return None
    return value.lower()


def validate_common(p: Any, path: str) -> None:
    """Check the values of the keys of :class:`AlgorithmParams` that ``p`` has."""
    preset = getattr(p, "preset", None)
    if preset is not None and preset not in POT_PRESET_ALIASES:
        _choice(f"{path}.preset", preset, PRESETS, "preset")
    size = getattr(p, "stat_subset_size", None)
    if size is not None and size < 1:
        _bad(f"{path}.stat_subset_size", f"must be at least 1, got {size}")
    _check_model_type(f"{path}.model_type", getattr(p, "model_type", None))
    _check_plugin(f"{path}.target_device", "hw_targets", getattr(p, "target_device", None))


def _check_model_type(path: str, value: Optional[str]) -> None:
    mt = normalize_model_type(value)
    if mt is not None and mt not in MODEL_TYPES:
        _bad(path, f"unknown model type {_show(value)} (known: None, Transformer)")


def output_name_problem(name: Any) -> Optional[str]:
    """Why ``name`` cannot name the output files ``<name>.xml``/``.bin``/``.report.json``, or None."""
    if not isinstance(name, str) or not name.strip():
        return "must not be empty"
    if name in (".", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        return "must be a file name, not a path"
    if "\x00" in name:
        return "must not contain a NUL character"
    try:
        size = len(os.fsencode(name + ".report.json"))
    except UnicodeError:
        return "cannot be encoded as a file name"
    if size > 255:
        return "is too long for a file name"
    return None


def validate_config(cfg: Config) -> None:
    """Check names against the plugin registry, value ranges, and structure each algorithm's params."""
    if cfg.model is not None and cfg.model.model_name:
        problem = output_name_problem(cfg.model.model_name)
        if problem:
            _bad("model.model_name", f"{problem}, got {_show(cfg.model.model_name)}")
    comp = cfg.compression
    _check_plugin("compression.target_device", "hw_targets", comp.target_device)
    _check_model_type("compression.model_type", comp.model_type)
    if cfg.engine is not None:
        if cfg.engine.type != "simplified":
            _bad("engine.type", f"unknown engine type {_show(cfg.engine.type)} (known: simplified; ovquant runs the "
                                "simplified engine only)")
        if cfg.engine.stat_requests_number is not None and cfg.engine.stat_requests_number < 1:
            _bad("engine.stat_requests_number", "must be at least 1")
    if not comp.algorithms:
        _bad("compression.algorithms", "no algorithm given")
    from .registry import lookup

    for i, algo in enumerate(comp.algorithms):
        path = f"compression.algorithms[{i}]"
        _check_plugin(f"{path}.name", "algorithms", algo.name)
        cls = lookup("algorithms", algo.name)
        algo.params = parse_params(cls, algo.params, f"{path}.params", comp)


#: id(params) -> (weak reference to it, its fingerprint when parsed): what :func:`parse_params` returned
_parsed: dict = {}


def _fingerprint(v: Any) -> Any:
    """The value of a params object as plain data, to tell whether it changed since it was parsed: attrs
    objects, lists, tuples and dicts by content, JSON scalars by value, anything else (an array, a data
    set, a callable) by identity (never copied or compared)."""
    if attrs.has(type(v)):
        return (type(v), tuple(_fingerprint(getattr(v, f.name)) for f in attrs.fields(type(v))))
    if isinstance(v, (list, tuple)):
        return (type(v), tuple(_fingerprint(x) for x in v))
    if isinstance(v, dict):
        return (dict, tuple((_fingerprint(k), _fingerprint(x)) for k, x in v.items()))
    if v is None or isinstance(v, (str, int, float, bool)):
        return (type(v), v)
    return ("object", id(v))


def _remember(params: Any) -> Any:
    key = id(params)
    try:
        ref = weakref.ref(params, lambda _, k=key: _parsed.pop(k, None))
    except TypeError:   # not weak-referenceable: parsed again when passed again
        return params
    _parsed[key] = (ref, _fingerprint(params))
    return params


def is_parsed(params: Any) -> bool:
    """Whether ``params`` is an object :func:`parse_params` returned and nobody changed since."""
    entry = _parsed.get(id(params))
    return entry is not None and entry[0]() is params and entry[1] == _fingerprint(params)


def params_class(algorithm_cls) -> type:
    """The attrs class an algorithm's params are structured into (:class:`AlgorithmParams` by default)."""
    return getattr(algorithm_cls, "params_class", None) or AlgorithmParams


def parse_params(algorithm_cls, raw: Any, path: str, comp: Optional["CompressionConfig"] = None):
    """Structure and validate the params of one algorithm, inheriting the ``compression`` section's
    target_device, model_type, inplace_statistics and dump_intermediate_model as POT does. ``raw`` is
    not modified; params this function returned and nobody changed are returned as they are."""
    if is_parsed(raw) and comp is None:
        return raw
    if attrs.has(type(raw)):
        params = raw
    else:
        params = structure({} if raw is None else raw, params_class(algorithm_cls), path)
    if comp is not None:
        inherit = {key: getattr(comp, key) for key in ("target_device", "model_type", "inplace_statistics",
                                                        "dump_intermediate_model")
                   if hasattr(params, key) and getattr(params, key) is None}
        if inherit:
            params = attrs.evolve(params, **inherit)
    validate_common(params, path)
    check = getattr(algorithm_cls, "validate_params", None)
    if check is not None:
        from .registry import guarded

        # a bug in the plugin, not in the config, names the plugin
        guarded("algorithms", getattr(algorithm_cls, "name", "?"), "validate_params", check, params, path,
                passthrough=(ConfigError,))
    return _remember(params)
