"""NNCF's keywords of ``nncf.quantize`` translated into ovquant params (see :func:`ovquant.api.quantize`)."""
import re
from typing import Any

from .errors import ConfigError
from .registry import get_registry

#: NNCF's keywords of ``nncf.quantize`` that have an ovquant equivalent (see :func:`quantize`)
#: (each registered algorithm's ``api_switch`` is one too, e.g. NNCF's switch of bias correction)
NNCF_KEYWORDS = ("preset", "target_device", "subset_size", "model_type", "ignored_scope", "mode",
                 "advanced_parameters")


def _enum_value(v: Any) -> Any:
    """NNCF passes enums (``nncf.QuantizationPreset.MIXED``, ``nncf.TargetDevice.CPU``): their value."""
    return getattr(v, "value", v) if v is not None and not isinstance(v, (str, int, float, bool, dict, list)) else v


def _ignored_from_scope(scope: Any) -> dict:
    """``ignored_scope`` as NNCF gives it (``nncf.IgnoredScope`` or a dict of names, patterns, types) ->
    ovquant's ``ignored`` params (exact names in ``scope``, ``patterns`` as NNCF matches them, op types in
    ``operations``; NNCF's ``validate``, True by default, makes an entry that matches no node an error)."""
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
    validate = fields.get("validate", True)
    return {"scope": [re.escape(n) for n in fields.get("names") or []],
            "patterns": [_pattern(p, i) for i, p in enumerate(fields.get("patterns") or [])],
            "operations": [{"type": t} for t in fields.get("types") or []], "validate": True if validate is None else validate}


def _pattern(pattern: Any, i: int) -> str:
    if not isinstance(pattern, str):
        raise ConfigError(f"ignored_scope.patterns[{i}]: expected a string, got {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"ignored_scope.patterns[{i}]: {pattern!r} is not a regular expression ({exc})") from None
    return pattern


def api_switches() -> dict:
    """keyword -> algorithm class, for every registered algorithm that declares an ``api_switch``."""
    algorithms = (e.obj for e in get_registry().entries["algorithms"].values())
    return {cls.api_switch: cls for cls in algorithms if getattr(cls, "api_switch", None)}


def nncf_overrides(kwargs: dict) -> tuple:
    """Translate NNCF's keywords into ovquant params; returns (overrides, switched-off api switches)."""
    out, off = {}, set()
    switches = api_switches()
    for k, v in list(kwargs.items()):
        v = _enum_value(v)
        if k == "mode":
            if v is not None:
                raise ConfigError(f"mode: {v!r} (NNCF's FP8/FP4 modes) has no ovquant equivalent; leave it unset")
        elif k == "advanced_parameters":
            if v is not None:
                raise ConfigError("advanced_parameters: NNCF's advanced parameters have no ovquant equivalent; "
                                  "give ovquant params as keywords or a config instead")
        elif k in switches:
            if v is None:
                off.add(k)
            elif v is False:
                raise ConfigError(f"{k}: False {switches[k].api_switch_false}")
            elif v is not True:
                raise ConfigError(f"{k}: expected True, False or None, got {v!r}")
        elif k == "ignored_scope":
            if v is not None:
                out["ignored"] = _ignored_from_scope(v)
        elif k == "subset_size":
            out["stat_subset_size"] = v
        elif v is not None or k not in ("preset", "target_device", "model_type"):
            out[k] = v
    return out, off
