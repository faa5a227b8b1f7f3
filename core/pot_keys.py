"""POT keys that reach past the algorithms' params: the ``engine`` section's ``device`` and
``stat_requests_number`` become settings of the statistics :class:`~ovquant.engine.Engine`, and a key a
run accepts but does not implement gets one warning naming its key path (never silence).

An algorithm names its own accepted-but-unimplemented keys with a classmethod
``unimplemented_params(params) -> [(key, why), ...]`` (see docs/plugins.md); the keys of the
``compression`` section are checked here.
"""
import warnings
from typing import Any, Optional, Sequence

import openvino as ov

from .errors import ConfigError
from .registry import guarded, lookup


def engine_settings(engine: Any) -> dict:
    """Keyword arguments of :class:`~ovquant.engine.Engine` from a config's ``engine`` section:
    ``n_requests`` from ``stat_requests_number`` (results do not depend on it: samples are folded in
    order), ``device`` from ``device`` (statistics are collected there in FP32; it must exist here)."""
    if engine is None:
        return {}
    out = {}
    if engine.stat_requests_number is not None:
        out["n_requests"] = int(engine.stat_requests_number)
    device = str(engine.device or "CPU")
    if device != "CPU":
        try:
            available = list(ov.Core().available_devices)
        except Exception:
            available = ["CPU"]
        if not any(d == device or d.startswith(device + ".") for d in available):
            raise ConfigError(f"engine.device: {device!r} is not available on this machine (available: "
                              f"{', '.join(available) or 'none'}); statistics are collected on this device")
        out["device"] = device
    return out


def warn_unimplemented(steps: Sequence, compression: Optional[Any] = None,
                       prefix: str = "compression.algorithms") -> list:
    """Warn once per accepted key that ``steps`` (``[(name, params), ...]``, in config order) or the
    ``compression`` section set but that ovquant does not implement; returns the warned lines."""
    lines = []
    top = bool(getattr(compression, "dump_intermediate_model", False))
    if top:
        lines.append("compression.dump_intermediate_model: not implemented by ovquant; no intermediate "
                     "models are written")
    for i, (name, params) in enumerate(steps):
        path = f"{prefix}[{i}].params"
        if getattr(params, "dump_intermediate_model", None) and not top:
            lines.append(f"{path}.dump_intermediate_model: not implemented by ovquant; no intermediate models "
                         "are written")
        check = getattr(lookup("algorithms", name), "unimplemented_params", None)
        if check is not None:
            found = guarded("algorithms", name, "unimplemented_params", check, params, passthrough=(ConfigError,))
            lines.extend(f"{path}.{key}: {why}" for key, why in found or ())
    for line in dict.fromkeys(lines):
        warnings.warn(line, stacklevel=3)
    return lines
