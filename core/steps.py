"""The steps of a run, ``[(algorithm name, params), ...]``, from what a caller of the Python API passes:
a config (a path, a dict, a :class:`~ovquant.config.Config`), a params object or dict for the default
algorithm, or nothing; then keyword overrides.

The params are parsed and validated once per run, here; the caller's objects are never modified
(overrides make new params objects with :func:`attrs.evolve`). A params object that a loaded config
holds was validated when the config was loaded; it is validated again only if an override changed it.
"""
import os
from typing import Any, Optional, Sequence

import attrs

from .config import Config, config_from_dict, load_config, params_class, parse_params, structure
from .structure import structure_value
from .errors import ConfigError
from .registry import get_registry, lookup

#: keyword spellings of params (NNCF's and the CLI's)
OVERRIDE_ALIASES = {"subset_size": "stat_subset_size"}


def default_algorithm() -> str:
    """The name of the registered algorithm marked ``is_default`` (what a bare quantize() runs)."""
    names = [e.name for e in get_registry().entries["algorithms"].values() if getattr(e.obj, "is_default", False)]
    if len(names) != 1:
        raise ConfigError(f"no single default algorithm is registered (found: {', '.join(names) or 'none'}); "
                          "name one in the config")
    return names[0]


def params_from(config: Any) -> tuple:
    """(list of (algorithm name, params or None), compression-level target_device) from what a user
    passes; the params are what the config holds (not copied, not yet overridden)."""
    if config is None:
        return [(default_algorithm(), None)], None
    if isinstance(config, Config):
        return [(a.name, a.params) for a in config.compression.algorithms], config.compression.target_device
    if attrs.has(type(config)):
        return [(default_algorithm(), config)], None
    if isinstance(config, (str, os.PathLike)):
        return params_from(load_config(os.fspath(config)))
    if isinstance(config, dict):
        if "compression" in config or "model" in config or "engine" in config:
            return params_from(config_from_dict(config))
        if "algorithms" in config:
            return params_from(config_from_dict({"compression": config}))
        name = default_algorithm()
        return [(name, structure(config, params_class(lookup("algorithms", name)), "params"))], None
    raise ConfigError(f"config of type {type(config).__name__} is not supported (a path, a dict or a params "
                      "object)")


def _with_overrides(params: Any, overrides: dict) -> Any:
    """``params`` with the overrides its class has (a new object if any changes a value), each value
    checked and structured as in a config file (a dict for an attrs-typed field is structured into it)."""
    fields = attrs.fields_dict(type(params))
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            continue   # a setting for the other steps (checked that some step has it)
        changes[key] = structure_value(value, fields[key].type, key)   # as strict as a config file
    if all(getattr(params, k) == v for k, v in changes.items()):
        return params
    return attrs.evolve(params, **changes)


def _check_keys(steps: list, overrides: dict) -> None:
    """Every override is a key of some step's params class, or of the default algorithm's."""
    classes = [params_class(lookup("algorithms", name)) for name, _ in steps]
    try:
        classes.append(params_class(lookup("algorithms", default_algorithm())))
    except ConfigError:
        pass
    for k in overrides:
        key = OVERRIDE_ALIASES.get(k, k)
        if any(isinstance(p, dict) for _, p in steps):
            continue
        if not any(key in attrs.fields_dict(c) for c in classes):
            raise ConfigError(f"{k}: unknown parameter (of {', '.join(n for n, _ in steps)})")


def apply_overrides(steps: list, overrides: dict) -> list:
    """The steps with their params overridden, structured and validated (once)."""
    _check_keys(steps, overrides)
    overrides = {OVERRIDE_ALIASES.get(k, k): v for k, v in overrides.items()}
    out = []
    for name, params in steps:
        cls = lookup("algorithms", name)
        path = f"{name}.params"
        if isinstance(params, dict):
            params = structure({**params, **overrides}, params_class(cls), path)
        else:
            if params is None:   # the class's defaults
                params = structure({}, params_class(cls), path)
            params = _with_overrides(params, overrides)
        out.append((name, parse_params(cls, params, path)))
    return out


def run_steps(config: Any, pipeline: Optional[Sequence[str]], overrides: dict) -> tuple:
    """(steps with parsed params, compression-level target device) for a run."""
    steps, device = params_from(config) if config is not None or pipeline is None else ([], None)
    if pipeline is not None:
        _check_pipeline(pipeline)
        base = steps[0][1] if steps else None
        steps = [(name, base) for name in pipeline]
    return steps, device


def _check_pipeline(pipeline: Any) -> None:
    """``pipeline=``: a non-empty list of registered algorithm names (a string is not read letter by letter)."""
    if isinstance(pipeline, (str, bytes)) or not isinstance(pipeline, Sequence):
        raise ConfigError(f"pipeline: expected a list of algorithm names, got {pipeline!r:.60}")
    if not pipeline:
        raise ConfigError("pipeline: the list is empty; name at least one algorithm")
    known = get_registry().names("algorithms")
    for i, name in enumerate(pipeline):
        try:
            lookup("algorithms", name)
        except (KeyError, TypeError):
            raise ConfigError(f"pipeline[{i}]: unknown algorithm {name!r:.60} (known: {', '.join(known)})") from None
