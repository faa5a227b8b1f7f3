"""Strict structuring of JSON values into attrs classes (cattrs), with one-line key-path errors::

    compression.algorithms[0].params.weights.bits: expected an integer, got 'eight'

and the small helpers every validator shares (the echo of a value, a choice among names, a plugin name
checked against the registry)."""
import math
from typing import Any, Optional, Union

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from .errors import ConfigError


def _json_name(t) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[t]


#: an echoed value or key is cut to this many characters
MAX_ECHO = 80


def _clip_text(text: str, limit: int = MAX_ECHO) -> str:
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text)} characters)"


def _show(v) -> str:
    """``repr(v)`` for an error line: one line, at most ~80 characters."""
    return _clip_text(repr(v))


def _describe(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return "an object" if isinstance(v, dict) else "a list"
    return _show(v)


def _strict(t):
    def hook(v, _):
        ok = isinstance(v, t) and not (t in (int, float) and isinstance(v, bool))
        if t is float and isinstance(v, int) and not isinstance(v, bool):
            ok = True
        if not ok:
            raise TypeError(f"expected {_json_name(t)}, got {_describe(v)}")
        if t is float and not math.isfinite(v):
            raise TypeError(f"expected a finite number, got {_describe(v)}")
        return t(v)
    return hook


def _make_converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for t in (int, float, str, bool):
        c.register_structure_hook(t, _strict(t))

    def any_hook(v, _):
        return v

    c.register_structure_hook(Any, any_hook)

    def dict_hook(v, t):
        if not isinstance(v, dict):
            raise TypeError(f"expected an object, got {_describe(v)}")
        return dict(v)

    c.register_structure_hook_func(lambda t: getattr(t, "__origin__", None) is dict, dict_hook)

    return c


_converter = _make_converter()


def _check_containers(data: Any, cls: type, path: str) -> None:
    """Type-check objects and lists before cattrs sees them (it would iterate a string as a list)."""
    if not attrs.has(cls):
        return
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<top>'}: expected an object, got {_describe(data)}")
    fields = {f.name: f for f in attrs.fields(cls) if not f.metadata.get("internal")}
    for key, val in data.items():
        if key not in fields:
            raise ConfigError(f"{_join(path, key)}: unknown key (known: {', '.join(sorted(fields))})")
        declared = fields[key].type
        t = _unwrap_optional(declared)
        if val is None:
            # null is allowed for Optional keys; a required object or list must not be null
            if t is declared and attrs.has(t):
                raise ConfigError(f"{_join(path, key)}: expected an object, got null")
            if t is declared and getattr(t, "__origin__", None) in (list, dict):
                kind = "a list" if t.__origin__ is list else "an object"
                raise ConfigError(f"{_join(path, key)}: expected {kind}, got null")
            continue
        if attrs.has(t):
            _check_containers(val, t, _join(path, key))
        elif getattr(t, "__origin__", None) is list:
            if not isinstance(val, list):
                raise ConfigError(f"{_join(path, key)}: expected a list, got {_describe(val)}")
            inner = t.__args__[0]
            for i, item in enumerate(val):
                if attrs.has(inner):
                    _check_containers(item, inner, f"{_join(path, key)}[{i}]")
        elif getattr(t, "__origin__", None) is dict and not isinstance(val, dict):
            raise ConfigError(f"{_join(path, key)}: expected an object, got {_describe(val)}")


def _unwrap_optional(t):
    if getattr(t, "__origin__", None) is Union:
        args = [a for a in t.__args__ if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return t


def _join(path: str, key: str) -> str:
    key = _clip_text(str(key))
    return f"{path}.{key}" if path else key


def _first_error(exc: BaseException, path: str) -> tuple[str, str]:
    """The path and message of the first leaf error of a cattrs validation error tree."""
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        if with_notes:
            sub, note = with_notes[0]
            if isinstance(sub, KeyError):  # the key path of a missing key is the key itself
                return _join(path, note.name), "missing required key"
            return _first_error(sub, _join(path, note.name))
        if without:
            return _first_error(without[0], path)
    if isinstance(exc, IterableValidationError):
        with_notes, without = exc.group_exceptions()
        if with_notes:
            sub, note = with_notes[0]
            return _first_error(sub, f"{path}[{note.index}]")
        if without:
            return _first_error(without[0], path)
    if isinstance(exc, ForbiddenExtraKeysError):
        key = sorted(exc.extra_fields)[0]
        known = ", ".join(sorted(f.name for f in attrs.fields(exc.cl)))
        return _join(path, key), f"unknown key (known: {known})"
    if isinstance(exc, KeyError):
        return path, f"missing required key {exc.args[0]!r}"
    return path, str(exc)


def structure(data: Any, cls: type, path: str = ""):
    """Structure ``data`` into ``cls``; any problem is a ConfigError with the key path."""
    _check_containers(data, cls, path)
    try:
        return _converter.structure(data, cls)
    except ConfigError:
        raise
    except Exception as exc:  # cattrs validation tree
        where, msg = _first_error(exc, path)
        raise ConfigError(f"{where or '<top>'}: {msg}") from None


def structure_value(value: Any, t: type, path: str):
    """One value (a keyword override) checked and structured as a field of type ``t`` would be in a config
    file; an attrs instance of ``t`` is taken as it is. A problem is a ConfigError naming ``path``."""
    inner = _unwrap_optional(t)
    if value is None and inner is not t or (attrs.has(inner) and isinstance(value, inner)):
        return value
    if attrs.has(inner):
        return structure(value, inner, path)
    if getattr(inner, "__origin__", None) is list and not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
    try:
        return _converter.structure(value, t)
    except ConfigError:
        raise
    except Exception as exc:
        where, msg = _first_error(exc, path)
        if where == path and ", got " in msg:   # the value as Python spells it (True, not true)
            msg = f"{msg.rsplit(', got ', 1)[0]}, got {_show(value)}".replace("true or false", "True or False")
        raise ConfigError(f"{where or path}: {msg}") from None


def unstructure(obj) -> Any:
    return _converter.unstructure(obj)



# ---- value checks ---------------------------------------------------------------------------------
def _bad(path: str, msg: str):
    raise ConfigError(f"{path}: {msg}")


def _choice(path: str, value, choices, what="value"):
    if value is not None and value not in choices:
        _bad(path, f"unknown {what} {_show(value)} (known: {', '.join(choices)})")


def _check_plugin(path: str, kind: str, name: Optional[str]):
    if name is None:
        return
    from .registry import get_registry

    reg = get_registry()
    try:
        reg.get(kind, name)
    except KeyError:
        label = {"estimators": "estimator", "aggregators": "aggregator", "algorithms": "algorithm",
                 "hw_targets": "target device"}[kind]
        from .pot_compat import pot_hint

        _bad(path, f"unknown {label} {_show(name)}{pot_hint(kind, name)} (known: {', '.join(reg.names(kind))})")



def _hashable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def plugin_params(kind: str, name: str, raw: Optional[dict], path: str) -> dict:
    """The params a config gives estimator or aggregator ``name`` (``raw``, a dict or None), checked
    against what the plugin declares: its ``params_class`` (an attrs class: unknown keys are refused
    with the accepted list, types checked) and its optional ``validate_params(params, path)``. Returns
    the values that differ from the declared defaults, hashable (lists as tuples), for the constructor."""
    if raw is None:
        return {}
    from .registry import guarded, lookup

    cls = lookup(kind, name)
    declared = getattr(cls, "params_class", None)
    if declared is None:
        if raw:
            _bad(f"{path}.{sorted(raw)[0]}", f"unknown key ({kind[:-1]} {name!r} takes no params)")
        return {}
    params = structure(raw, declared, path)
    check = getattr(cls, "validate_params", None)
    if check is not None:   # a bug in the plugin, not in the config, names the plugin
        guarded(kind, name, "validate_params", check, params, path, passthrough=(ConfigError,))
    defaults = declared()
    return {f.name: _hashable(getattr(params, f.name)) for f in attrs.fields(declared)
            if getattr(params, f.name) != getattr(defaults, f.name)}
