"""POT's hardware-config files (``openvino/tools/pot/configs/hardware/*.json``) in ovquant's target schema.

POT's schema::

    {"target_device": "CPU", "primary_bitwidth": 8,
     "config": {"quantization": {"q8_a": {"bits": 8, "mode": [...], "granularity": "pertensor", ...}}},
     "operations": [{"type": "Convolution", "quantization": {"activations": "q8_a", "weights": [...]},
                     "attributes": {...}}, {"type": "MaxPool"}, ...]}

maps to ovquant's (docs/hw_targets.md): the named ``config.quantization`` schemes become ``schemes``; an
operation with ``quantization`` becomes an ``operations`` rule, one without becomes quantization-agnostic;
``attributes.unified_scales: "all"`` (Concat) becomes ``unified_scales: true``, and LSTM/GRUSequence's port
groups ``[[0, 1], [4, 5]]`` become ``unified_scales`` (X and H) and ``unified_weight_scales`` (W and R);
other attributes filter
the op (POT matches them the same way). POT's own rules that its files do not spell out are added:
the quantizable ports of LSTMSequence/GRUSequence, the single quantized input of Power, AvgPool, ...,
the saturation fix on CPU and ANY, and the preset renaming per device (``accuracy`` runs ``mixed`` on
CPU, GPU and ANY; ``mixed`` runs ``accuracy`` on GNA). POT reads its files with jstyleson: comments and
trailing commas are allowed, as here.
"""
from __future__ import annotations

import json
from typing import Any

#: POT's op type names that ovquant spells differently
_TYPE_NAMES = {"DepthWiseConvolution": "DepthwiseConvolution"}
#: input ports POT quantizes (its TYPES_TO_QUANTIZABLE_PORTS, and the ops whose other inputs are not data)
_PORTS = {"LSTMSequence": [0, 1, 4, 5], "GRUSequence": [0, 1, 3, 4], "Power": [0], "AvgPool": [0],
          "NormalizeL2": [0], "ReduceMean": [0], "Interpolate": [0], "MVN": [0]}
#: the weight ports of the ops whose POT ``unified_scales`` lists group inputs (the rest are activations)
_WEIGHT_PORTS = {"LSTMSequence": [4, 5], "GRUSequence": [3, 4]}
#: POT's preset renaming per target_device (configs/config.py); other devices: accuracy runs mixed
_PRESET_ALIASES = {"NPU": {}, "VPU": {}, "GNA": {"mixed": "accuracy"}, "GNA3": {"mixed": "accuracy"},
                   "GNA3.5": {"mixed": "accuracy"}}
_SATURATION_FIX_DEVICES = ("CPU", "ANY", "CPU_SPR")
_SCHEME_KEYS = ("bits", "mode", "granularity", "level_low", "level_high", "unified_zeropoint")


class PotFormatError(ValueError):
    """A POT hardware config that cannot be expressed as an ovquant target (one line, key path)."""


def is_pot_target(data: Any) -> bool:
    """Whether parsed JSON looks like POT's hardware-config schema (not ovquant's)."""
    return isinstance(data, dict) and "target_device" in data and isinstance(data.get("operations"), list)


def read_pot_json(text: str) -> Any:
    """Parse a POT hardware config: JSON with comments and trailing commas."""
    from .config import strip_comments

    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return json.loads(strip_comments(text))
    except json.JSONDecodeError as exc:
        raise PotFormatError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _fail(where: str, msg: str):
    raise PotFormatError(f"{where}: {msg}")


def convert_pot_target(data: Any, name: str | None = None, device: str | None = None) -> dict:
    """POT's parsed hardware config as an ovquant target dict. ``device`` (default: the file's
    ``target_device``; POT itself takes it from the quantization config, and its gpu.json says CPU)
    decides the saturation fix and the preset renaming; ``name`` defaults to it."""
    if not is_pot_target(data):
        _fail("<top>", "not a POT hardware config (needs target_device and a list of operations)")
    device = device or data["target_device"]
    if not isinstance(device, str) or not device:
        _fail("target_device", "a non-empty string is required")
    extra = set(data) - {"target_device", "primary_bitwidth", "input_priority_types", "config", "operations"}
    if extra:
        _fail(sorted(extra)[0], "unknown key of POT's hardware config")
    cfg = data.get("config", {})
    if not isinstance(cfg, dict) or not isinstance(cfg.get("quantization", {}), dict):
        _fail("config.quantization", "expected an object of named schemes")
    schemes = {}
    for sname, spec in cfg.get("quantization", {}).items():
        where = f"config.quantization.{sname}"
        if not isinstance(spec, dict):
            _fail(where, "expected an object")
        unknown = set(spec) - set(_SCHEME_KEYS)
        if unknown:
            _fail(f"{where}.{sorted(unknown)[0]}", f"not supported (ovquant schemes have {', '.join(_SCHEME_KEYS)})")
        bits = spec.get("bits")
        for b in bits if isinstance(bits, list) else [bits]:
            if isinstance(b, int) and b > 16:
                _fail(f"{where}.bits", f"{b}-bit schemes are not supported (at most 16 bits)")
        schemes[sname] = dict(spec)
    operations: dict = {}
    agnostic: list = []
    for i, op in enumerate(data["operations"]):
        where = f"operations[{i}]"
        if not isinstance(op, dict) or not isinstance(op.get("type"), str):
            _fail(where, "expected an object with a type")
        unknown = set(op) - {"type", "quantization", "attributes"}
        if unknown:
            _fail(f"{where}.{sorted(unknown)[0]}", "unknown key of a POT operation")
        t = _TYPE_NAMES.get(op["type"], op["type"])
        attributes = dict(op.get("attributes", {}))
        rule: dict = {}
        unified = attributes.pop("unified_scales", None)
        if unified == "all":
            rule["unified_scales"] = True
        elif isinstance(unified, list) and t in _WEIGHT_PORTS:   # LSTM/GRU: [[X, H], [W, R]]
            for group in unified:
                if isinstance(group, list) and len(group) > 1:
                    key = "unified_weight_scales" if set(group) <= set(_WEIGHT_PORTS[t]) else "unified_scales"
                    rule[key] = True
        q = op.get("quantization")
        if q is not None:
            if not isinstance(q, dict):
                _fail(f"{where}.quantization", "expected an object")
            for kind, ref in q.items():
                if kind not in ("activations", "weights"):
                    _fail(f"{where}.quantization.{kind}", f"{kind} quantization is not supported "
                                                          "(ovquant quantizes activations and weights)")
                rule[kind] = ref
            if t in _PORTS:
                rule["ports"] = _PORTS[t]
        if attributes:
            rule["attributes"] = attributes
        if q is None and not rule:
            agnostic.append(t)
            continue
        if q is None and rule.get("unified_scales"):
            agnostic.append(t)
        operations.setdefault(t, []).append(rule)
    if not operations:
        _fail("operations", "no operation is quantized")
    aliases = _PRESET_ALIASES.get(device.upper(), {"accuracy": "mixed"})
    out = {"$schema_version": 1, "name": name or device,
           "description": f"converted from POT's hardware config for {device}",
           "saturation_fix": device.upper() in _SATURATION_FIX_DEVICES,
           "schemes": schemes,
           "operations": {t: (rules[0] if len(rules) == 1 else rules) for t, rules in operations.items()},
           "agnostic_operations": sorted(set(agnostic))}
    if aliases:
        out["preset_aliases"] = aliases
    return out


def convert_pot_target_file(path: str, name: str | None = None, device: str | None = None) -> dict:
    """Read and convert a POT hardware-config file; problems raise PotFormatError naming the file."""
    from .config import decode_text
    from .errors import ConfigError

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise PotFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = decode_text(raw, path)
    except ConfigError as exc:
        raise PotFormatError(str(exc)) from None
    try:
        return convert_pot_target(read_pot_json(text), name, device)
    except PotFormatError as exc:
        raise PotFormatError(f"{path}: POT hardware config: {exc}") from None
