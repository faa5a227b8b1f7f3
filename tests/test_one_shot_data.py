"""Calibration data that can be read only once (a generator, a Dataset over one) and NNCF's Dataset
interface: every pass of a run (statistics, the granularity choice's held-back samples, the checks) sees
the same samples as from a list, and what cannot be replayed is one clear DataError."""
import numpy as np
import openvino as ov
import pytest

import models
from ovquant import Dataset
from ovquant import dataset as ds
from ovquant.accuracy_control import quantize_with_accuracy_control
from ovquant.api import quantize_with_report
from ovquant.errors import DataError

N = 96   # more than the granularity choice's 64 held-back samples: its stage runs


class NNCFStyleDataset:
    """The interface nncf.Dataset documents (get_data, get_inference_data, get_length, get_batch_size),
    holding its source as nncf.Dataset does; NNCF itself is not a dependency of the tests."""

    def __init__(self, data_source, transform_func=None):
        self._data_source, self._transform_func = data_source, transform_func

    def get_data(self, indices=None):
        return iter(self._data_source)

    def get_inference_data(self, indices=None):
        return (self._transform_func(x) if self._transform_func else x for x in self._data_source)

    def get_length(self):
        return len(self._data_source) if hasattr(self._data_source, "__len__") else None

    def get_batch_size(self):
        return 1


@pytest.fixture(scope="module")
def case():
    m = models.conv_net()
    samples = models.random_samples(m, N, seed=5)
    ref, rep = quantize_with_report(m, samples, skip_slow_int8=False)
    assert any(a["name"] == "ActivationGranularityChoice" and a["n_scored"] for a in rep["algorithms"])
    return m, samples, _bytes(ref)


def _bytes(model: ov.Model) -> dict:
    """Every FakeQuantize's borders and every Constant's values, by friendly name."""
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            out[op.get_friendly_name()] = op.get_data().tobytes()
    return out


@pytest.mark.parametrize("kind", ["generator", "iterator", "Dataset over a generator", "nncf-style over a generator",
                                  "nncf-style over a list"])
def test_a_source_read_once_gives_the_model_a_list_gives(case, kind):
    m, samples, ref = case
    wrapped = [{"x": s} for s in samples]
    data = {"generator": lambda: (s for s in samples),
            "iterator": lambda: iter(samples),
            "Dataset over a generator": lambda: Dataset((w for w in wrapped), lambda w: w["x"]),
            "nncf-style over a generator": lambda: NNCFStyleDataset((w for w in wrapped), lambda w: w["x"]),
            "nncf-style over a list": lambda: NNCFStyleDataset(wrapped, lambda w: w["x"])}[kind]()
    q, rep = quantize_with_report(m, data, skip_slow_int8=False)
    assert _bytes(q) == ref
    choice = next(a for a in rep["algorithms"] if a["name"] == "ActivationGranularityChoice")
    assert choice["n_scored"] > 0


def test_replay_keeps_the_first_samples_and_reads_on_where_nothing_was_skipped(monkeypatch):
    monkeypatch.setattr(ds, "REPLAY_SAMPLES", 4)
    r = ds.replayable(iter(range(10)))
    assert list(ds.take(r, 2)) == [0, 1]          # a first pass over 2 samples
    assert list(ds.take(r, 3)) == [0, 1, 2]       # the third is read now, in order
    assert list(ds.take(r, 6)) == [0, 1, 2, 3, 4, 5]   # kept up to 4, then read on live
    with pytest.raises(DataError, match=r"one-shot iterator .* needs sample 5 again and only the first 4 were kept"):
        list(ds.take(r, 5))
    short = ds.replayable(iter(range(3)))
    assert list(short) == [0, 1, 2] and list(short) == [0, 1, 2]   # all kept: read as often as wanted


def test_a_later_pass_beyond_the_kept_samples_is_one_data_error(case, monkeypatch):
    m, samples, _ = case
    monkeypatch.setattr(ds, "REPLAY_SAMPLES", 10)   # fewer than the choice's 64 held-back samples
    with pytest.raises(DataError) as e:
        quantize_with_report(m, (s for s in samples), skip_slow_int8=False)
    assert "\n" not in str(e.value) and "give a list" in str(e.value)


def test_accuracy_control_reads_a_generator_twice_and_refuses_a_one_shot_validation_set(case):
    m, samples, _ = case
    val = models.random_samples(m, 8, seed=9)
    fp32 = ov.Core().compile_model(m, "CPU")

    def validation_fn(compiled, data):
        ref = [fp32(x)[0] for x in data]
        got = [compiled(x)[0] for x in data]
        return -float(np.mean([np.abs(a - b).mean() for a, b in zip(ref, got)]))

    with pytest.raises(DataError, match="validation_dataset: a one-shot iterator"):
        quantize_with_accuracy_control(m, samples, (v for v in val), validation_fn, max_drop=1.0)
    q = quantize_with_accuracy_control(m, (s for s in samples), val, validation_fn, max_drop=1.0, skip_slow_int8=False)
    assert _bytes(q) == case[2]
