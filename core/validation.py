"""What accuracy control compares: a user's metric over a validation dataset (:class:`Validator`) and the
drop of a candidate's metric from FP32's (:func:`drop_of`)."""
import math
import time
from typing import Any, Callable

import openvino as ov

from .errors import ConfigError

#: a drop within this of ``max_drop`` passes (metrics such as 0.93 - 0.92 are not exact in binary)
DROP_TOL = 1e-9


def drop_of(reference: float, value: float, drop_type: str) -> float:
    """``reference - value`` (absolute), or that over ``|reference|`` (relative); infinite for a NaN ``value``."""
    if math.isnan(float(value)):
        return float("inf")   # a metric that is not a number passes no bound
    d = float(reference) - float(value)
    if drop_type == "relative":
        return d / abs(float(reference)) if reference else (0.0 if d == 0 else float("inf"))
    return d


def check_drop_type(drop_type: Any) -> str:
    """``absolute`` or ``relative`` (NNCF's ``DropType`` enum accepted), else a ConfigError."""
    v = getattr(drop_type, "value", drop_type)
    v = str(v).lower() if v is not None else "absolute"
    if v not in ("absolute", "relative"):
        raise ConfigError(f"drop_type: expected 'absolute' or 'relative', got {drop_type!r}")
    return v


class Validator:
    """Compiles a model on CPU and scores it with ``validation_fn(compiled_model, validation_data)``
    (higher is better; a ``(metric, per-sample values)`` tuple as NNCF allows is read as its first
    item), counting the runs."""

    def __init__(self, validation_fn: Callable, validation_data: Any):
        if not callable(validation_fn):
            raise ConfigError(f"validation_fn: expected a callable, got {type(validation_fn).__name__}")
        self.fn, self.data, self.runs, self.seconds = validation_fn, validation_data, 0, 0.0
        self.core = ov.Core()

    def __call__(self, model: ov.Model) -> float:
        t0 = time.perf_counter()
        compiled = self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        try:
            value = self.fn(compiled, self.data)
        except Exception as exc:   # the user's function: one line naming it (OVQUANT_DEBUG=1: the original)
            from .registry import debug, one_line

            if debug() or isinstance(exc, ConfigError):
                raise
            name = getattr(self.fn, "__qualname__", repr(self.fn))
            raise ConfigError(f"validation_fn {name}: raised {type(exc).__name__}: {one_line(exc)}") from exc
        value = value[0] if isinstance(value, (tuple, list)) else value
        self.runs += 1
        self.seconds += time.perf_counter() - t0
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"validation_fn: returned {type(value).__name__}, expected a number") from None


def validation_items(dataset: Any) -> Any:
    """What ``validation_fn`` receives: NNCF's ``get_data()``, an ovquant Dataset's source, or the object."""
    if hasattr(dataset, "get_data"):
        return dataset.get_data()
    if hasattr(dataset, "transform_fn") and hasattr(dataset, "data_source"):
        return dataset.data_source
    return dataset
