"""Hardware targets: declarative JSON describing the quantization schemes a device runs in int8.

The schema is documented in docs/hw_targets.md. A target file names **schemes** (bits, mode,
granularity, optional integer levels) and, per OpenVINO op type, the schemes its activation inputs
and its weights allow, in order of preference: presets pick from these ordered lists (``performance``
the first candidate, ``mixed`` the last activation candidate). Fields given as lists expand into one
candidate per combination, in list order.

This module validates and loads target files; it names no concrete target.
"""
from __future__ import annotations

import functools
import itertools
import json
import os
from typing import Any, Optional

import attrs

from .hwtarget_rules import PRESETS, TargetRules

MODES = ("symmetric", "asymmetric")
GRANULARITIES = ("pertensor", "perchannel")
_TOP_KEYS = {"name", "aliases", "description", "schemes", "operations", "agnostic_operations",
             "saturation_fix", "preset_aliases", "$schema_version", "slow_int8_operations"}
_SCHEME_KEYS = {"bits", "mode", "granularity", "level_low", "level_high", "unified_zeropoint"}
_OP_KEYS = {"activations", "weights", "ports", "unified_scales", "attributes", "requires_activations",
            "unified_weight_scales"}
SCHEMA_VERSION = 1


@attrs.frozen
class Scheme:
    """One concrete quantization scheme: bits, mode, granularity and integer range."""

    bits: int
    mode: str
    granularity: str
    level_low: Optional[int] = None
    level_high: Optional[int] = None
    unified_zeropoint: bool = False

    @property
    def levels(self) -> int:
        """The number of integer levels: ``|level_high| + |level_low| + 1`` (POT's count; the grid holds 0),
        else ``2 ** bits``."""
        if self.level_low is not None and self.level_high is not None:
            return abs(self.level_high) + abs(self.level_low) + 1
        return 2 ** self.bits

    def describe(self) -> str:
        rng = f" [{self.level_low},{self.level_high}]" if self.level_low is not None else ""
        return f"{self.bits}-bit {self.mode} {self.granularity}{rng}"


@attrs.frozen
class OpRule:
    """What a target allows for one op type."""

    activations: tuple[Scheme, ...] = ()
    weights: tuple[Scheme, ...] = ()
    ports: Optional[tuple[int, ...]] = None     # input ports to quantize, activations or weights (None: all)
    unified_scales: bool = False                # inputs share one scale (Concat)
    attributes: tuple = ()                      # (name, value) pairs the op must have to match
    requires_activations: tuple[int, ...] = ()  # ports that must be activations, else the op gets no quantizer
    unified_weight_scales: bool = False         # weight inputs share one scale per channel (CPU RNN sequences)


@attrs.frozen
class HardwareTarget(TargetRules):
    """A loaded target; what its fields mean for an op, a port and a preset are the methods of
    :class:`~ovquant.hwtarget_rules.TargetRules` (``rule_for``, ``port_schemes``, ``pick``, ...)."""

    name: str
    path: str
    operations: dict = attrs.field(factory=dict, hash=False)   # op type -> list[OpRule]
    agnostic_operations: frozenset = frozenset()
    aliases: tuple = ()
    description: str = ""
    saturation_fix: bool = False
    preset_aliases: tuple = ()                  # (preset, preset this target runs instead) pairs
    slow_int8_operations: tuple = ()            # op types kept in float: their int8 form is slower there


class _Invalid(ValueError):
    pass


def _fail(where: str, msg: str):
    raise _Invalid(f"{where}: {msg}")


def _expand_scheme(name: str, spec: Any, where: str) -> list[Scheme]:
    if not isinstance(spec, dict):
        _fail(where, f"must be an object, not {type(spec).__name__}")
    extra = set(spec) - _SCHEME_KEYS
    if extra:
        _fail(f"{where}.{sorted(extra)[0]}", f"unknown key (known: {', '.join(sorted(_SCHEME_KEYS))})")
    for req in ("bits", "mode", "granularity"):
        if req not in spec:
            _fail(where, f"missing key {req!r}")

    def as_list(key, allowed=None, typ=None):
        v = spec[key]
        vals = v if isinstance(v, list) else [v]
        if not vals:
            _fail(f"{where}.{key}", "empty list")
        for x in vals:
            if typ is int and (not isinstance(x, int) or isinstance(x, bool)):
                _fail(f"{where}.{key}", f"expected an integer, got {x!r}")
            if allowed and x not in allowed:
                _fail(f"{where}.{key}", f"{x!r} is not one of {', '.join(allowed)}")
        return vals

    bits = as_list("bits", typ=int)
    for b in bits:
        if not 1 <= b <= 16:
            _fail(f"{where}.bits", f"{b} is outside 1..16")
    modes = as_list("mode", MODES)
    grans = as_list("granularity", GRANULARITIES)
    lo, hi = spec.get("level_low"), spec.get("level_high")
    for key, v in (("level_low", lo), ("level_high", hi)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            _fail(f"{where}.{key}", f"expected an integer, got {v!r}")
    if (lo is None) != (hi is None):
        _fail(where, "level_low and level_high go together")
    if lo is not None and lo >= hi:
        _fail(where, f"level_low {lo} must be below level_high {hi}")
    if lo is not None and not lo <= 0 <= hi:
        _fail(where, f"levels [{lo},{hi}] must hold 0 (level_low <= 0 <= level_high)")
    uz = spec.get("unified_zeropoint", False)
    if not isinstance(uz, bool):
        _fail(f"{where}.unified_zeropoint", f"expected true or false, got {uz!r}")
    out = []
    for b, m, g in itertools.product(bits, modes, grans):
        if lo is not None and hi - lo + 1 > 2 ** b:
            _fail(where, f"levels [{lo},{hi}] do not fit in {b} bits")
        out.append(Scheme(b, m, g, lo, hi, uz))
    return out


def _scheme_list(ref: Any, schemes: dict, where: str) -> tuple[Scheme, ...]:
    refs = ref if isinstance(ref, list) else [ref]
    out: list[Scheme] = []
    if not refs:
        _fail(where, "an empty list of schemes (leave the key out for none)")
    for i, r in enumerate(refs):
        w = f"{where}[{i}]" if isinstance(ref, list) else where
        if isinstance(r, str):
            if r not in schemes:
                _fail(w, f"unknown scheme {r!r} (defined: {', '.join(sorted(schemes)) or 'none'})")
            out.extend(schemes[r])
        elif isinstance(r, dict):
            out.extend(_expand_scheme("<inline>", r, w))
        else:
            _fail(w, f"expected a scheme name or object, got {r!r}")
    return tuple(out)


def _parse(data: Any, path: str) -> HardwareTarget:
    if not isinstance(data, dict):
        _fail("<top>", "a hardware target is a JSON object")
    extra = set(data) - _TOP_KEYS
    if extra:
        _fail(sorted(extra)[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS - {'$schema_version'}))})")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        _fail("name", "a non-empty string is required")
    ver = data.get("$schema_version", SCHEMA_VERSION)
    if ver != SCHEMA_VERSION or not isinstance(ver, int) or isinstance(ver, bool):
        _fail("$schema_version", f"{ver!r} is not supported (this ovquant reads version {SCHEMA_VERSION})")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        _fail("aliases", "expected a list of names")
    raw_schemes = data.get("schemes", {})
    if not isinstance(raw_schemes, dict):
        _fail("schemes", "expected an object of named schemes")
    schemes = {k: _expand_scheme(k, v, f"schemes.{k}") for k, v in raw_schemes.items()}
    ops = data.get("operations")
    if not isinstance(ops, dict) or not ops:
        _fail("operations", "expected a non-empty object of op types")
    operations: dict[str, list[OpRule]] = {}
    for op_type, entries in ops.items():
        if entries == []:
            _fail(f"operations.{op_type}", "an empty list of rules (give a rule object, or leave the op type out)")
        for i, spec in enumerate(entries if isinstance(entries, list) else [entries]):
            where = f"operations.{op_type}" + (f"[{i}]" if isinstance(entries, list) else "")
            if not isinstance(spec, dict):
                _fail(where, "expected an object")
            extra = set(spec) - _OP_KEYS
            if extra:
                _fail(f"{where}.{sorted(extra)[0]}", f"unknown key (known: {', '.join(sorted(_OP_KEYS))})")
            acts = _scheme_list(spec["activations"], schemes, f"{where}.activations") if "activations" in spec else ()
            wts = _scheme_list(spec["weights"], schemes, f"{where}.weights") if "weights" in spec else ()
            ports = spec.get("ports")
            if ports is not None and (not isinstance(ports, list) or not ports or not all(
                    isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in ports)):
                _fail(f"{where}.ports", "expected a non-empty list of input port numbers")
            us = spec.get("unified_scales", False)
            if not isinstance(us, bool):
                _fail(f"{where}.unified_scales", f"expected true or false, got {us!r}")
            uws = spec.get("unified_weight_scales", False)
            if not isinstance(uws, bool):
                _fail(f"{where}.unified_weight_scales", f"expected true or false, got {uws!r}")
            attrs_ = spec.get("attributes", {})
            if not isinstance(attrs_, dict):
                _fail(f"{where}.attributes", "expected an object")
            req = spec.get("requires_activations", [])
            if not isinstance(req, list) or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0
                                                    for p in req):
                _fail(f"{where}.requires_activations", "expected a list of input port numbers")
            if ports is not None and set(req) - set(ports):
                _fail(f"{where}.requires_activations", f"port {sorted(set(req) - set(ports))[0]} is not in ports")
            operations.setdefault(op_type, []).append(
                OpRule(acts, wts, tuple(ports) if ports is not None else None, us, tuple(sorted(attrs_.items())),
                       tuple(req), uws))
    agn = data.get("agnostic_operations", [])
    if not isinstance(agn, list) or not all(isinstance(a, str) for a in agn):
        _fail("agnostic_operations", "expected a list of op types")
    for i, op_type in enumerate(agn):
        if any(r.activations for r in operations.get(op_type, ())):
            _fail(f"agnostic_operations[{i}]", f"{op_type!r} has activation schemes in operations; an agnostic op "
                                               "moves its input's quantizer, it gets none of its own")
    sat = data.get("saturation_fix", False)
    if not isinstance(sat, bool):
        _fail("saturation_fix", f"expected true or false, got {sat!r}")
    pa = data.get("preset_aliases", {})
    if not isinstance(pa, dict) or not all(k in PRESETS and v in PRESETS for k, v in pa.items()):
        _fail("preset_aliases", f"expected an object mapping presets to presets ({', '.join(PRESETS)})")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        _fail("description", "expected a string")
    slow = data.get("slow_int8_operations", [])
    if not isinstance(slow, list) or not all(isinstance(a, str) and a for a in slow):
        _fail("slow_int8_operations", "expected a list of op types")
    return HardwareTarget(name=name, path=path, operations=operations, agnostic_operations=frozenset(agn),
                          aliases=tuple(aliases), description=desc, saturation_fix=sat,
                          preset_aliases=tuple(sorted(pa.items())), slow_int8_operations=tuple(slow))


def load_target(source: Any) -> HardwareTarget:
    """Load and validate a target from a path (str, PathLike, importlib.resources Traversable) or dict.

    A malformed file raises ``ValueError`` with one line: ``<file>: <key path>: <problem>``.
    """
    if isinstance(source, dict):
        path, data = "<dict>", source
    else:
        path = str(source)
        try:
            if hasattr(source, "read_text"):
                text = source.read_text(encoding="utf-8")
            else:
                with open(os.fspath(source), encoding="utf-8") as f:
                    text = f.read()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: not UTF-8 text (byte {exc.start})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            data = _pot_json(text)   # POT's files have comments and trailing commas
            if data is None:
                raise ValueError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    data = _from_pot(data, path)
    try:
        return _parse(data, path)
    except _Invalid as exc:
        raise ValueError(f"{path}: {exc}") from None


def _pot_json(text: str):
    """``text`` parsed as POT parses its hardware configs (comments, trailing commas), or None."""
    from .pot_target import PotFormatError, read_pot_json

    try:
        data = read_pot_json(text)
    except PotFormatError:
        return None
    from .pot_target import is_pot_target

    return data if is_pot_target(data) else None


def _from_pot(data: Any, path: str) -> Any:
    """A POT hardware config converted to this schema (core/pot_target.py); others unchanged."""
    from .pot_target import PotFormatError, convert_pot_target, is_pot_target

    if not is_pot_target(data):
        return data
    try:
        return convert_pot_target(data)
    except PotFormatError as exc:
        raise ValueError(f"{path}: POT's hardware-config format, and not convertible to an ovquant target: {exc} "
                         "(ovquant's schema: docs/hw_targets.md; `ovquant convert-target` converts POT's files)") from None


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset:
    """The words of /proc/cpuinfo, read once per process (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


def native_int8() -> str:
    """This CPU's native int8 dot-product flag (``amx_int8``, ``avx512_vnni``, ``avx_vnni``), or "" when it
    has none or oneDNN is capped below it (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA``, read on each call)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap and cap not in ("ALL", "DEFAULT") and "VNNI" not in cap and "AMX" not in cap:
        return ""
    flags = _cpu_flags()
    return next((fl for fl in ("amx_int8", "avx512_vnni", "avx_vnni") if fl in flags), "")
