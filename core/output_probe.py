"""Whole-model output error of switchable configurations of a model, per sample, against a reference model.

A *probe model* is a model with ``n`` extra scalar boolean Parameters (after its own inputs) that switch
parts of it between two alternatives (for example ``Select(s_j, new_j, old_j)``). On samples ``s`` and
for each output ``k`` with reference ``r_k`` (the reference model's output on the same sample) and
``y_k(c)`` under configuration ``c``, the per-sample error is

    e_s(c) = mean_k ||y_k,s(c) - r_k,s||^2 / mean_s ||r_k,s||^2

so that ``mean_s e_s(c) = mean_k rel_k(c)^2``, the score :mod:`ovquant.sensitivity` ranks quantizers by
(``rel_k`` the relative L2 error of output ``k`` over all samples). Both models are compiled once in f32,
with the samples batched where the model can be reshaped; every configuration is just another input.
"""
from typing import Optional, Sequence

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .feeds import FeedBuilder
from .sensitivity import BATCH, _F32, _batched, chunks


def add_switches(model: ov.Model, n: int, prefix: str = "ovquant_probe") -> list:
    """``n`` new scalar boolean Parameters, added to ``model`` after its inputs (in order)."""
    sws = [ops.parameter([], ov.Type.boolean, name=f"{prefix}_{i}") for i in range(n)]
    model.add_parameters(sws)
    return sws


class OutputProbe:
    """``probe`` (a model with ``n_switches`` extra boolean Parameters after the ``reference``'s inputs) and
    ``reference`` run on ``samples``; :meth:`errors` gives ``e_s(c)`` of the module docstring."""

    def __init__(self, probe: ov.Model, n_switches: int, reference: ov.Model, samples: Sequence,
                 batch: int = BATCH, core: Optional[ov.Core] = None):
        core = core or ov.Core()
        self.n_inputs = len(reference.inputs)
        self.n_switches = n_switches
        feeds = FeedBuilder(reference.inputs)
        rows = [feeds(s, i) for i, s in enumerate(samples)]
        self.batch = min(batch, max(1, len(rows)))
        p, r = probe.clone(), reference.clone()
        if self.batch > 1 and (_batched(p, self.n_inputs, self.batch) != self.batch or
                               _batched(r, self.n_inputs, self.batch) != self.batch):
            p, r, self.batch = probe.clone(), reference.clone(), 1   # a failed reshape may leave a model half done
        probe, reference = p, r
        self.chunks = chunks(rows, self.batch, self.n_inputs)
        self.n_outputs = len(reference.outputs)
        ref = core.compile_model(reference, "CPU", _F32).create_infer_request()
        self.reference = [[np.array(ref.infer(feed)[k], np.float64)[:real] for k in range(self.n_outputs)]
                          for feed, real in self.chunks]
        self.den = [np.mean(np.concatenate([np.sum(r[k].reshape(len(r[k]), -1) ** 2, axis=1)
                                            for r in self.reference])) for k in range(self.n_outputs)]
        self.request = core.compile_model(probe, "CPU", _F32).create_infer_request()
        self.runs = 0

    @property
    def samples(self) -> int:
        return sum(real for _, real in self.chunks)

    def errors(self, config: Sequence[bool]) -> np.ndarray:
        """``e_s(config)`` for every sample, in sample order."""
        self.runs += 1
        switches = {self.n_inputs + i: np.array(bool(v)) for i, v in enumerate(config)}
        out = []
        for (feed, real), ref in zip(self.chunks, self.reference):
            r = self.request.infer({**feed, **switches})
            e = np.zeros(real)
            for k in range(self.n_outputs):
                d = np.array(r[k], np.float64)[:real] - ref[k]
                num = np.sum(d.reshape(real, -1) ** 2, axis=1)
                e += num / self.den[k] if self.den[k] > 0 else np.where(num > 0, np.inf, 0.0)
            out.append(e / max(self.n_outputs, 1))
        return np.concatenate(out) if out else np.zeros(0)
