"""Params are parsed and validated once per run, by the algorithm's own declaration, and the objects a caller
passes (a Config, a params object) are never modified by a run."""
import copy
import json
from typing import Optional

import attrs
import pytest

import models
import ovquant
from ovquant import registry
from ovquant.algorithm import Algorithm
from ovquant.api import quantize_with_report
from ovquant.config import AlgorithmParams, config_from_dict, parse_params
from ovquant.errors import ConfigError
from ovquant.plugins.algorithms.params import QuantizationParams

CALLS = []


@attrs.define(kw_only=True)
class CountingParams:
    stat_subset_size: Optional[int] = None
    target_device: Optional[str] = None
    level: int = 1


class CountingAlgorithm(Algorithm):
    """A third-party algorithm that counts how often its params are validated."""

    name = "TestCountingValidate"
    params_class = CountingParams

    @staticmethod
    def validate_params(params, path):
        CALLS.append(path)
        if params.level < 0:
            raise ConfigError(f"{path}.level: must be at least 0, got {params.level}")

    def apply(self, graph, stats):
        return {"level": self.params.level}


class _Plugin:
    @ovquant.hookimpl
    def register_algorithms(self, register):
        register(CountingAlgorithm)


@pytest.fixture
def counting():
    name = registry.register_plugin(_Plugin(), name="test_params_once.counting")
    CALLS.clear()
    try:
        yield CALLS
    finally:
        registry.unregister_plugin(name)


def _config(**params) -> dict:
    return {"compression": {"target_device": "CPU", "algorithms": [{"name": "TestCountingValidate",
                                                                    "params": params}]}}


def test_a_config_file_is_parsed_and_validated_once_per_run(counting, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_config(stat_subset_size=4, level=2)))
    m = models.conv_net()
    _, report = quantize_with_report(m, models.random_samples(m, 4), str(path))
    assert counting == ["compression.algorithms[0].params"]
    assert report["algorithms"][0]["level"] == 2


def test_keyword_params_are_validated_once_per_run(counting):
    m = models.conv_net()
    _, report = quantize_with_report(m, models.random_samples(m, 4), pipeline=["TestCountingValidate"], level=3)
    assert counting == ["TestCountingValidate.params"]
    assert report["algorithms"][0]["level"] == 3


def test_a_keyword_that_changes_loaded_params_is_validated(counting):
    cfg = config_from_dict(_config(stat_subset_size=4))
    counting.clear()
    m = models.conv_net()
    with pytest.raises(ConfigError, match=r"^TestCountingValidate\.params\.level: must be at least 0, got -1$"):
        quantize_with_report(m, models.random_samples(m, 4), cfg, level=-1)
    assert counting == ["TestCountingValidate.params"]


def test_a_config_object_passed_in_is_not_modified():
    cfg = config_from_dict({"compression": {"target_device": "CPU", "algorithms": [
        {"name": "DefaultQuantization", "params": {"preset": "mixed", "ignored": {"scope": ["conv1"]}}}]}})
    before = copy.deepcopy(cfg)
    params = cfg.compression.algorithms[0].params
    m = models.conv_net()
    _, report = quantize_with_report(m, models.random_samples(m, 4), cfg, preset="performance", subset_size=3,
                                     ignored={"scope": ["conv2"]})
    assert cfg == before
    assert cfg.compression.algorithms[0].params is params
    assert params.preset == "mixed" and params.stat_subset_size is None and params.ignored.scope == ["conv1"]
    # the run used the keywords
    step = report["settings"]["steps"][0]["params"]
    assert (step["preset"], step["stat_subset_size"], step["ignored"]["scope"]) == ("performance", 3, ["conv2"])


def test_a_params_object_passed_in_is_not_modified():
    p = QuantizationParams(preset="mixed")
    before = copy.deepcopy(p)
    m = models.conv_net()
    _, report = quantize_with_report(m, models.random_samples(m, 4), p, target_device="CPU",
                                     model_type="transformer", subset_size=2)
    assert p == before and p.target_device is None
    assert report["settings"]["steps"][0]["params"]["target_device"] == "CPU"


def test_parsed_params_are_returned_as_they_are_until_changed(counting):
    parsed = parse_params(CountingAlgorithm, {"level": 1}, "p")
    assert parse_params(CountingAlgorithm, parsed, "p") is parsed and counting == ["p"]
    parsed.level = -2   # changed after parsing: validated again
    with pytest.raises(ConfigError, match=r"^p\.level: must be at least 0, got -2$"):
        parse_params(CountingAlgorithm, parsed, "p")


def test_an_algorithm_without_params_class_gets_the_shared_keys_checked():
    class Plain(Algorithm):
        name = "TestPlain"

    p = parse_params(Plain, {"stat_subset_size": 5, "seed": 2}, "compression.algorithms[0].params")
    assert isinstance(p, AlgorithmParams) and (p.stat_subset_size, p.seed) == (5, 2)
    with pytest.raises(ConfigError, match=r"^compression\.algorithms\[0\]\.params\.weights: unknown key \(known: "
                                          r"model_type, preset, seed, shuffle_data, stat_subset_size, target_device\)$"):
        parse_params(Plain, {"weights": {}}, "compression.algorithms[0].params")
    with pytest.raises(ConfigError, match=r"^x\.stat_subset_size: must be at least 1, got 0$"):
        parse_params(Plain, {"stat_subset_size": 0}, "x")


def test_params_holding_arrays_and_generators_are_remembered_without_copying_them(counting):
    """A params field may hold anything (validation data, a callable): it is neither copied nor compared
    by value, and a change to the other fields is still seen."""
    import numpy as np

    @attrs.define(kw_only=True)
    class DataParams(CountingParams):
        data: object = None

    class WithData(CountingAlgorithm):
        params_class = DataParams

    rows = np.ones((4, 3), np.float32)
    gen = (i for i in range(3))
    p = parse_params(WithData, DataParams(data=[rows, gen]), "p")
    assert p.data[0] is rows and p.data[1] is gen
    assert parse_params(WithData, p, "p") is p and counting == ["p"]
    p.level = 5
    assert parse_params(WithData, p, "p") is p and counting == ["p", "p"]
