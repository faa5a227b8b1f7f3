"""The config model: POT's JSON config file as attrs classes, loaded with cattrs.

The file has three sections, ``model``, ``engine`` and ``compression`` (docs/config.md documents every
key). JSON with ``//`` and ``/* */`` comments loads. Every problem is reported as one line naming the
key path, e.g.::

    compression.algorithms[0].params.weights.range_estimator.max.type: unknown estimator 'maxx' (known: ...)

Algorithm params are structured by the algorithm's own ``params_class`` (found in the plugin registry),
so third-party algorithms validate their own keys. Plugin names are checked against the registry, never
against a hard-coded list.
"""
import json
import math
import os
import warnings
from typing import Any, Optional, Union

import attrs
import cattrs
import json5
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from .errors import ConfigError

PRESETS = ("performance", "mixed", "accuracy")
POT_PRESET_ALIASES = ("symmetric", "asymmetric")   # POT's: performance and accuracy
MODES = ("symmetric", "asymmetric")
GRANULARITIES = ("pertensor", "perchannel")
MODEL_TYPES = ("transformer",)
RANGE_PRESETS = ("default", "quantile")
SATURATION_FIX = ("first_layer", "all", "no")
BIAS_CORRECTION_FORMS = ("exact", "fast", "mean_blob")


# ---- sections ---------------------------------------------------------------------------------------
@attrs.define(kw_only=True)
class RangeBorder:
    """``range_estimator.min`` / ``range_estimator.max``: estimator type, aggregator, outlier_prob."""

    type: Optional[str] = None
    aggregator: Optional[str] = None
    outlier_prob: Optional[float] = None
    clipping_value: Optional[float] = None


@attrs.define(kw_only=True)
class RangeEstimatorConfig:
    preset: Optional[str] = None
    min: Optional[RangeBorder] = None
    max: Optional[RangeBorder] = None


@attrs.define(kw_only=True)
class TensorQuantization:
    """``weights`` / ``activations``: the scheme a user asks for, and how ranges are estimated."""

    bits: Optional[int] = None
    mode: Optional[str] = None
    level_low: Optional[int] = None
    level_high: Optional[int] = None
    granularity: Optional[str] = None
    range_estimator: Optional[RangeEstimatorConfig] = None


@attrs.define(kw_only=True)
class IgnoredOperation:
    type: str
    attributes: dict[str, Any] = attrs.Factory(dict)


@attrs.define(kw_only=True)
class Ignored:
    """``ignored``: node names (exact, or a regex as NNCF allows) and op types with attribute filters."""

    scope: list[str] = attrs.Factory(list)
    operations: list[IgnoredOperation] = attrs.Factory(list)
    skip_model: bool = False


@attrs.define(kw_only=True)
class QuantizationParams:
    """The params of POT's DefaultQuantization (and of the algorithms it is made of)."""

    preset: str = "performance"
    stat_subset_size: Optional[int] = None
    shuffle_data: bool = False
    seed: int = 0
    model_type: Optional[str] = None
    target_device: Optional[str] = None
    ignored: Ignored = attrs.Factory(Ignored)
    weights: Optional[TensorQuantization] = None
    activations: Optional[TensorQuantization] = None
    range_estimator: Optional[RangeEstimatorConfig] = None
    use_layerwise_tuning: bool = False
    inplace_statistics: Optional[bool] = None
    dump_intermediate_model: Optional[bool] = None
    saturation_fix: str = "first_layer"
    threshold: Optional[float] = None
    apply_for_all_nodes: bool = False
    use_fast_bias: bool = True
    bias_correction_form: str = "fast"
    auto_activations_granularity: str = "pertensor"
    first_layer_rounding: bool = False
    use_smooth_quant: Optional[bool] = None
    smooth_quant_alpha: Optional[float] = None
    #: keep in float the ops whose int8 form is slower on the CPU (None: on where the target is the CPU)
    skip_slow_int8: Optional[bool] = None


@attrs.define(kw_only=True)
class ModelConfig:
    model_name: str = "model"
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


# ---- strict structuring --------------------------------------------------------------------------
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


def unstructure(obj) -> Any:
    return _converter.unstructure(obj)


# ---- loading -------------------------------------------------------------------------------------
def read_json(path: str) -> Any:
    """Read JSON with comments (and POT's other leniencies: trailing commas, NaN); a problem names the
    file. UTF-8 (with or without a BOM), UTF-16 and UTF-32 (with a BOM, or detected from the zero bytes
    as RFC 4627 does) are read."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    text = decode_text(raw, path)
    return parse_json_text(text, path)


def decode_text(raw: bytes, path: str) -> str:
    """The text of a JSON file's bytes: the encoding from a BOM, else from the pattern of zero bytes in
    the first four (JSON text starts with an ASCII character), else UTF-8."""
    boms = ((b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\xef\xbb\xbf", "utf-8-sig"),
            (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"))
    enc = next((e for bom, e in boms if raw.startswith(bom)), None)
    skip = 0
    if enc is not None and enc != "utf-8-sig":
        skip = len(next(bom for bom, e in boms if e == enc))
    elif enc is None:
        head = raw[:4]
        if len(head) == 4 and head[0] == 0 and head[1] == 0 and head[2] == 0:
            enc = "utf-32-be"
        elif len(head) == 4 and head[1] == 0 and head[2] == 0 and head[3] == 0:
            enc = "utf-32-le"
        elif len(head) >= 2 and head[0] == 0:
            enc = "utf-16-be"
        elif len(head) >= 2 and head[1] == 0:
            enc = "utf-16-le"
        else:
            enc = "utf-8"
    try:
        return raw[skip:].decode(enc)
    except UnicodeDecodeError as exc:
        name = {"utf-8-sig": "UTF-8"}.get(enc, enc.upper().replace("-BE", " BE").replace("-LE", " LE"))
        raise ConfigError(f"{path}: cannot read: not valid {name} text (byte {exc.start + skip}); "
                          "save the file as UTF-8") from None


def strip_comments(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments blanked (newlines kept, so line numbers stay) and commas
    before a closing ``]`` or ``}`` removed; strings are left alone. One pass: linear in the text."""
    out = []
    i, n = 0, len(text)
    pending_comma = None          # index in ``out`` of a comma that a closing bracket would make trailing
    seg = 0                       # start of the run of ordinary characters not yet copied
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = min(j + 1, n)
            pending_comma = None
            continue
        if c == "/" and i + 1 < n and text[i + 1] in "/*":
            out.append(text[seg:i])
            if text[i + 1] == "/":
                j = text.find("\n", i)
                j = n if j < 0 else j
                out.append(" " * (j - i))
            else:
                j = text.find("*/", i + 2)
                j = n if j < 0 else j + 2
                out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = seg = j
            continue
        if c == ",":
            out.append(text[seg:i])
            pending_comma = len(out)
            out.append(",")
            i += 1
            seg = i
            continue
        if c in "]}" and pending_comma is not None:
            out[pending_comma] = " "
        if not c.isspace():
            pending_comma = None
        i += 1
    out.append(text[seg:])
    return "".join(out)


def parse_json_text(text: str, path: str) -> Any:
    """Parse JSON text with comments: the standard parser (plain JSON, or JSON once its comments and
    trailing commas are blanked), json5 for any other JSON5 syntax and for the error message."""
    for candidate in (text, None):
        try:
            if candidate is None:
                candidate = strip_comments(text)
            return json.loads(candidate, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError):
            pass
    try:
        return _join_surrogates(json5.loads(text, allow_duplicate_keys=False))
    except RecursionError:
        raise ConfigError(f"{path}: not valid JSON: nested too deeply") from None
    except ValueError as exc:
        msg = str(exc).replace("<string>:", "line ").splitlines()[0]
        raise ConfigError(f"{path}: not valid JSON: {_clip_text(msg)}") from None


def _no_duplicates(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ValueError("duplicate key")   # json5 below reports it with its line
    return d


def _join_surrogates(v: Any) -> Any:
    """json5 leaves an escaped surrogate pair (``"\\ud83d\\ude00"``, as ``json.dump`` writes any character
    outside the BMP) as two code points; join them into the one character they encode, as JSON does."""
    if isinstance(v, str):
        if any("\ud800" <= c <= "\udfff" for c in v):
            return v.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
        return v
    if isinstance(v, list):
        return [_join_surrogates(x) for x in v]
    if isinstance(v, dict):
        return {_join_surrogates(k): _join_surrogates(x) for k, x in v.items()}
    return v


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


# ---- POT compatibility ---------------------------------------------------------------------------
#: algorithms POT has and ovquant does not (named in the error line)
POT_ONLY_ALGORITHMS = ("AccuracyAwareQuantization", "TunableQuantization", "WeightSparsity", "MagnitudeSparsity",
                       "BaseWeightSparsity", "RangeOptimization", "QuantNoiseEstimator", "INT4MixedQuantization",
                       "QuantileTuningAlgorithm", "DataFreeQuantization", "ParamsTuningSearch", "OverflowCorrection",
                       "RangeSupervision", "BiasCorrection", "OutlierChannelSplitting", "WeightBiasCorrection",
                       "AccuracyAwareGNA", "AccuracyAwareCommon")


def _keys(cls) -> tuple:
    """The keys a section's attrs class reads from the file."""
    return tuple(f.name for f in attrs.fields(cls) if not f.metadata.get("internal"))


def _pot_hint(kind: str, name) -> str:
    if kind == "algorithms" and name in POT_ONLY_ALGORITHMS:
        if name == "TunableQuantization":
            return " (a POT algorithm that ovquant does not have: it is tuned by the config's optimizer section)"
        return " (a POT algorithm that ovquant does not have)"
    return ""


def pot_compat(data: Any) -> tuple:
    """POT's file as ovquant structures it: (data, the ``optimizer`` section or None).

    POT validates only the algorithms' params and ignores unknown keys elsewhere: those are dropped
    with a warning here. ``model.name`` (the older spelling of ``model_name``, in POT's BERT configs)
    names the model. Cascaded models (``model.cascade``) are refused. The algorithms' params are left
    as they are (their unknown keys are refused, as POT refuses them)."""
    if not isinstance(data, dict):
        return data, None
    data = dict(data)
    optimizer = data.pop("optimizer", None)
    for key in [k for k in data if k not in _keys(Config)]:
        warnings.warn(f"{_clip_text(str(key))}: unknown top-level key, ignored (as POT ignores it)", stacklevel=3)
        data.pop(key)
    model = data.get("model")
    if isinstance(model, dict):
        model = data["model"] = dict(model)
        if "cascade" in model:
            _bad("model.cascade", "cascaded models (several models quantized together, as POT's cascade) are not "
                                  "supported; quantize each model with a config of its own")
        if "name" in model:
            name = model.pop("name")
            if "model_name" in model:
                warnings.warn("model.name: ignored, model.model_name names the model", stacklevel=3)
            else:
                model["model_name"] = name   # POT's older spelling
        _drop_unknown(model, "model", ModelConfig)
    comp = data.get("compression")
    if isinstance(comp, dict):
        comp = data["compression"] = dict(comp)
        _drop_unknown(comp, "compression", CompressionConfig)
    engine = data.get("engine")
    if isinstance(engine, dict):
        known = _keys(EngineConfig)
        extra = [k for k in engine if k not in known]
        if extra:
            data["engine"] = {k: v for k, v in engine.items() if k in known}
            warnings.warn(f"engine: {', '.join(_clip_text(str(k), 40) for k in extra[:8])}"
                          f"{', ...' if len(extra) > 8 else ''}: ignored (ovquant runs POT's simplified engine: "
                          f"{', '.join(known)})", stacklevel=3)
    return data, optimizer


def _drop_unknown(section: dict, name: str, cls) -> None:
    known = _keys(cls)
    for key in [k for k in section if k not in known]:
        close = [k for k in known if _similar(str(key), k)]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        warnings.warn(f"{name}.{_clip_text(str(key))}: unknown key, ignored (as POT ignores it){hint}", stacklevel=4)
        section.pop(key)


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() >= 0.8


# ---- semantic validation -------------------------------------------------------------------------
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
        _bad(path, f"unknown {label} {_show(name)}{_pot_hint(kind, name)} (known: {', '.join(reg.names(kind))})")


def normalize_model_type(value: Optional[str]) -> Optional[str]:
    if value is None or value.lower() in ("none", ""):
        return None
    return value.lower()


def validate_params(p: QuantizationParams, path: str) -> None:
    """Check the values of DefaultQuantization-style params (types were checked when structuring)."""
    if p.preset not in POT_PRESET_ALIASES:
        _choice(f"{path}.preset", p.preset, PRESETS, "preset")
    if p.stat_subset_size is not None and p.stat_subset_size < 1:
        _bad(f"{path}.stat_subset_size", f"must be at least 1, got {p.stat_subset_size}")
    mt = normalize_model_type(p.model_type)
    if mt is not None and mt not in MODEL_TYPES:
        _bad(f"{path}.model_type", f"unknown model type {_show(p.model_type)} (known: None, Transformer)")
    _check_plugin(f"{path}.target_device", "hw_targets", p.target_device)
    _choice(f"{path}.saturation_fix", p.saturation_fix, SATURATION_FIX)
    _choice(f"{path}.bias_correction_form", p.bias_correction_form, BIAS_CORRECTION_FORMS, "bias correction form")
    _choice(f"{path}.auto_activations_granularity", p.auto_activations_granularity, GRANULARITIES, "granularity")
    if p.smooth_quant_alpha is not None and not 0 <= p.smooth_quant_alpha <= 1:
        _bad(f"{path}.smooth_quant_alpha", f"must be in [0, 1], got {p.smooth_quant_alpha}")
    if p.threshold is not None and not p.threshold > 0:
        _bad(f"{path}.threshold", f"must be positive, got {p.threshold}")
    seen = set()
    for i, s in enumerate(p.ignored.scope):
        if not s.strip():
            _bad(f"{path}.ignored.scope[{i}]", "empty node name")
        if s in seen:
            _bad(f"{path}.ignored.scope[{i}]", f"duplicate entry {_show(s)}")
        seen.add(s)
    seen_ops = []
    for i, op in enumerate(p.ignored.operations):
        if not op.type.strip():
            _bad(f"{path}.ignored.operations[{i}].type", "empty op type")
        if (op.type, op.attributes) in seen_ops:
            _bad(f"{path}.ignored.operations[{i}]", f"duplicate entry for type {_show(op.type)}")
        seen_ops.append((op.type, op.attributes))
    if p.range_estimator is not None:
        _validate_range(p.range_estimator, f"{path}.range_estimator")
    for name in ("weights", "activations"):
        tq = getattr(p, name)
        if tq is not None:
            _validate_tensor(tq, f"{path}.{name}")


def _validate_tensor(tq: TensorQuantization, path: str) -> None:
    """bits, mode, granularity and the integer grid of ``weights``/``activations``.

    ``level_low``/``level_high`` have POT's meaning: the grid holds 0 and has ``|level_high| + |level_low| + 1``
    levels (a side not given takes POT's default for the bits); it must fit in ``bits`` and have at
    least 3 levels (a symmetric range with 2 levels has no scale)."""
    if tq.bits is not None and not 2 <= tq.bits <= 16:
        _bad(f"{path}.bits", f"must be between 2 and 16, got {tq.bits}" +
             (" (a 1-bit grid has no zero level and no scale)" if tq.bits == 1 else ""))
    _choice(f"{path}.mode", tq.mode, MODES, "mode")
    _choice(f"{path}.granularity", tq.granularity, GRANULARITIES, "granularity")
    lo, hi = tq.level_low, tq.level_high
    bits = tq.bits or 8
    if lo is not None and hi is not None and lo >= hi:
        _bad(f"{path}.level_low", f"level_low {lo} must be below level_high {hi}")
    for key, v in (("level_low", lo), ("level_high", hi)):
        if v is not None and not -(2 ** bits) < v < 2 ** bits:
            _bad(f"{path}.{key}", f"{v} does not fit in {bits} bits")
    if lo is not None and lo > 0:
        _bad(f"{path}.level_low", f"must be 0 or below (the integer grid holds 0), got {lo}")
    if hi is not None and hi < 0:
        _bad(f"{path}.level_high", f"must be 0 or above (the integer grid holds 0), got {hi}")
    if lo is not None or hi is not None:
        kind = path.rsplit(".", 1)[-1]
        sym_w = kind == "weights" and tq.mode in (None, "symmetric")
        eff_lo = lo if lo is not None else -2 ** (bits - 1) + (1 if sym_w else 0)
        eff_hi = hi if hi is not None else 2 ** (bits - 1) - 1
        levels = abs(eff_lo) + abs(eff_hi) + 1
        key = "level_high" if hi is not None else "level_low"
        if levels > 2 ** bits:
            _bad(f"{path}.{key}", f"levels [{eff_lo}, {eff_hi}] are {levels} levels, more than {bits} bits hold "
                                  f"({2 ** bits}); POT counts |level_high| + |level_low| + 1")
        if levels < 3:
            _bad(f"{path}.{key}", f"levels [{eff_lo}, {eff_hi}] are {levels} levels; at least 3 are needed")
    if tq.range_estimator is not None:
        _validate_range(tq.range_estimator, f"{path}.range_estimator")


def _validate_range(re_: RangeEstimatorConfig, path: str) -> None:
    """Estimator and aggregator names, ``outlier_prob`` in (0, 0.5), and ``clipping_value``: POT clips the
    max at it (so it must be above 0) and the min at it (so it must be 0 or below: the range holds 0)."""
    _choice(f"{path}.preset", re_.preset, RANGE_PRESETS, "range estimator preset")
    for side in ("min", "max"):
        b = getattr(re_, side)
        if b is None:
            continue
        _check_plugin(f"{path}.{side}.type", "estimators", b.type)
        if b.type is not None:
            from .registry import get_registry

            reg = get_registry()
            if not getattr(reg.get("estimators", b.type).obj, "range_estimator", True):
                ranges = [n for n in reg.names("estimators") if getattr(reg.get("estimators", n).obj, "range_estimator", True)]
                _bad(f"{path}.{side}.type", f"{b.type!r} is a statistic for algorithms, not a range estimator "
                                            f"(range estimators: {', '.join(ranges)})")
        _check_plugin(f"{path}.{side}.aggregator", "aggregators", b.aggregator)
        if b.outlier_prob is not None and not 0 < b.outlier_prob < 0.5:
            _bad(f"{path}.{side}.outlier_prob", f"must be in (0, 0.5), got {b.outlier_prob}")
        c = b.clipping_value
        if c is not None:
            if not math.isfinite(c):
                _bad(f"{path}.{side}.clipping_value", f"must be a finite number, got {c}")
            if side == "max" and not c > 0:
                _bad(f"{path}.{side}.clipping_value", f"must be above 0 (the max is clipped at it), got {c}")
            if side == "min" and c > 0:
                _bad(f"{path}.{side}.clipping_value", f"must be 0 or below (the min is clipped at it and the range "
                                                      f"holds 0), got {c}")


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
    if cfg.model is not None:
        problem = output_name_problem(cfg.model.model_name)
        if problem:
            _bad("model.model_name", f"{problem}, got {_show(cfg.model.model_name)}")
    comp = cfg.compression
    _check_plugin("compression.target_device", "hw_targets", comp.target_device)
    mt = normalize_model_type(comp.model_type)
    if mt is not None and mt not in MODEL_TYPES:
        _bad("compression.model_type", f"unknown model type {_show(comp.model_type)} (known: None, Transformer)")
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


def parse_params(algorithm_cls, raw: Any, path: str, comp: Optional[CompressionConfig] = None):
    """Structure and validate the params of one algorithm, inheriting the ``compression`` section's
    target_device, model_type, inplace_statistics and dump_intermediate_model as POT does."""
    params_cls = getattr(algorithm_cls, "params_class", QuantizationParams)
    if attrs.has(type(raw)):
        params = raw
    else:
        params = structure({} if raw is None else raw, params_cls, path)
    if comp is not None:
        for key in ("target_device", "model_type", "inplace_statistics", "dump_intermediate_model"):
            if hasattr(params, key) and getattr(params, key) is None:
                setattr(params, key, getattr(comp, key))
    check = getattr(algorithm_cls, "validate_params", None)
    if check is not None:
        from .registry import guarded

        # a bug in the plugin, not in the config, names the plugin
        guarded("algorithms", getattr(algorithm_cls, "name", "?"), "validate_params", check, params, path,
                passthrough=(ConfigError,))
    elif isinstance(params, QuantizationParams):
        validate_params(params, path)
    return params
