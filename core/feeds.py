"""Feeds: calibration samples turned into ``{input index: array}`` that fit a model's inputs."""
import warnings
from typing import Any

import numpy as np

from .errors import DataError


class FeedBuilder:
    """Turns samples into ``{input index: array}`` feeds that fit the model's inputs, or says why not."""

    def __init__(self, model_inputs):
        self.inputs = list(model_inputs)
        #: input label -> [samples with a NaN or Inf, the first such sample, samples with no finite value]
        self.nonfinite: dict = {}
        self.names = []
        for i, inp in enumerate(self.inputs):
            self.names.append(set(inp.get_names()) | {inp.get_node().get_friendly_name()})

    def _label(self, i: int) -> str:
        inp = self.inputs[i]
        return inp.get_any_name() if inp.get_names() else inp.get_node().get_friendly_name()

    def _index(self, key) -> int:
        if isinstance(key, int) and 0 <= key < len(self.inputs):
            return key
        k = key[len("input:"):] if isinstance(key, str) and key.startswith("input:") else key
        for i, names in enumerate(self.names):
            if k in names:
                return i
        known = ", ".join(sorted(next(iter(sorted(n))) for n in self.names))
        raise DataError(f"sample key {key!r} names no model input (inputs: {known})")

    def __call__(self, sample: Any, index: int) -> dict:
        if isinstance(sample, dict):
            items = [(self._index(k), v) for k, v in sample.items()]
            seen = {}
            for (i, _), key in zip(items, sample):
                if i in seen:
                    raise DataError(f"sample {index}: keys {seen[i]!r} and {key!r} both feed input "
                                    f"{self._label(i)!r}; give each input once")
                seen[i] = key
            missing = [self._label(i) for i in range(len(self.inputs)) if i not in seen]
            if missing:
                raise DataError(f"sample {index}: no value for model input(s) {', '.join(map(repr, missing))}")
        elif isinstance(sample, (list, tuple)):
            items = list(enumerate(sample))
        else:
            items = [(0, sample)]
        if len(items) != len(self.inputs):
            raise DataError(f"sample {index}: the model has {len(self.inputs)} input(s), the sample gives {len(items)}")
        return {i: self._fit(i, v, index) for i, v in items}

    def _fit(self, i: int, value: Any, index: int) -> np.ndarray:
        inp = self.inputs[i]
        name = inp.get_any_name() if inp.get_names() else inp.get_node().get_friendly_name()
        a = np.asarray(value)
        want = inp.get_element_type().to_dtype()
        if a.dtype != want:
            if np.issubdtype(want, np.integer) and not np.issubdtype(a.dtype, np.integer):
                raise DataError(f"sample {index}, input {name!r}: dtype {a.dtype} does not fit the model's {want}")
            if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
                raise DataError(f"sample {index}, input {name!r}: dtype {a.dtype} is not numeric")
            if np.iscomplexobj(a):   # numpy would drop the imaginary part with a mere ComplexWarning
                raise DataError(f"sample {index}, input {name!r}: dtype {a.dtype} does not fit the model's {want}")
            a = a.astype(want)
        ps = inp.get_partial_shape()
        if ps.rank.is_static:
            rank = ps.rank.get_length()
            if a.ndim == rank - 1:
                a = a[None]
            ok = a.ndim == rank and all(d.is_dynamic or d.get_length() == s for d, s in zip(ps, a.shape))
            if not ok:
                raise DataError(f"sample {index}, input {name!r}: shape {list(a.shape)} does not fit the model's {ps}")
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            rec = self.nonfinite.setdefault(name, [0, index, 0])
            rec[0] += 1
            rec[2] += not np.isfinite(a).any()
        return np.asarray(a, order="C")   # (np.ascontiguousarray makes a rank-0 value [1])


def check_inputs(nonfinite: dict, n: int, stage: int) -> None:
    """The calibration data's NaN and Inf: an error where an input has no finite value in any sample, else
    a warning (once, in the first stage) naming the inputs, how many samples and the first."""
    for name, (bad, first, empty) in nonfinite.items():
        if empty == n and n:
            raise DataError(f"calibration data: input {name!r} has no finite value in any of the {n} samples "
                            "(NaN or Inf everywhere)")
    if nonfinite and stage == 1:
        what = "; ".join(f"input {name!r} in {bad} of {n} samples (the first: sample {first})"
                         for name, (bad, first, _) in nonfinite.items())
        warnings.warn(f"NaN or Inf in the calibration data: {what}; the ranges ignore non-finite values")
