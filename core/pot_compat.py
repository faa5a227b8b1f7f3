"""POT compatibility of the config file: what POT accepts and ovquant drops with a warning (unknown
keys outside the algorithms' params, ``model.name``), and what it refuses with a hint (cascaded models,
POT's algorithms that ovquant does not have)."""
import difflib
import warnings
from typing import Any

import attrs

from .structure import _bad, _clip_text


#: algorithms POT has and ovquant does not (named in the error line)
POT_ONLY_ALGORITHMS = ("TunableQuantization", "WeightSparsity", "MagnitudeSparsity",
                       "BaseWeightSparsity", "RangeOptimization", "QuantNoiseEstimator", "INT4MixedQuantization",
                       "QuantileTuningAlgorithm", "DataFreeQuantization", "ParamsTuningSearch", "OverflowCorrection",
                       "RangeSupervision", "BiasCorrection", "OutlierChannelSplitting", "WeightBiasCorrection",
                       "AccuracyAwareGNA", "AccuracyAwareCommon")


def _keys(cls) -> tuple:
    """The keys a section's attrs class reads from the file."""
    return tuple(f.name for f in attrs.fields(cls) if not f.metadata.get("internal"))


def pot_hint(kind: str, name) -> str:
    """A hint for an unknown algorithm name that is one of POT's."""
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
    from .config import CompressionConfig, Config, EngineConfig, ModelConfig

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
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() >= 0.8

