"""The config file: POT's example loads unchanged, broken configs fail with one line naming the key path
(in Python and through the CLI), ``ovquant plugins`` lists the built-ins, and the plugin manager reports
duplicate names, raising hooks and too-new plugins."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import json5
import pytest

import ovquant
from ovquant import registry
from ovquant.algorithm import Algorithm
from ovquant.config import Config, config_from_dict, load_config, normalize_model_type
from ovquant.plugins.algorithms.params import QuantizationParams
from ovquant.errors import ConfigError, PluginError
from ovquant.statistics import Aggregator, Estimator

EXAMPLE = Path(__file__).parent / "data" / "pot_default_quantization_example.jsonc"
ENV = {**os.environ, "OVQUANT_DISABLE_PLUGIN_AUTOLOAD": "1"}
A0 = "compression.algorithms[0]"
P0 = f"{A0}.params"


# ---- fixtures and helpers ------------------------------------------------------------------------------
class _TestDefaultQuantization(Algorithm):
    """Stand-in for DefaultQuantization while it is not a built-in (validation only needs the name)."""

    name = "DefaultQuantization"


class _DefaultQuantizationPlugin:
    @ovquant.hookimpl
    def register_algorithms(self, register):
        register(_TestDefaultQuantization)


@pytest.fixture(autouse=True, scope="module")
def default_quantization():
    """Make sure "DefaultQuantization" is a known algorithm name (registered here only when missing)."""
    name = None
    if "DefaultQuantization" not in registry.known("algorithms"):
        name = registry.register_plugin(_DefaultQuantizationPlugin(), name="test_config.DefaultQuantization")
    yield
    if name is not None:
        registry.unregister_plugin(name)


def _builtin_algorithm() -> str:
    """An algorithm a fresh ``python -m ovquant.cli`` process knows and that takes QuantizationParams:
    DefaultQuantization once it is built in, else a built-in one with the same params."""
    entries = registry.get_registry().entries["algorithms"].values()
    builtin = {e.name: e.obj for e in entries if e.plugin.startswith("ovquant.plugins")}
    if "DefaultQuantization" in builtin:
        return "DefaultQuantization"
    for name, cls in sorted(builtin.items()):
        if issubclass(getattr(cls, "params_class", QuantizationParams), QuantizationParams):
            return name
    pytest.skip("no built-in algorithm takes QuantizationParams")


def example() -> dict:
    """The parsed example config (a fresh copy every call)."""
    return json5.loads(EXAMPLE.read_text(encoding="utf-8"))


def params(d: dict) -> dict:
    return d["compression"]["algorithms"][0]["params"]


def config_error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovquant.cli", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


def _unregister(name: str) -> None:
    if registry.get_plugin_manager().get_plugin(name) is not None:
        registry.unregister_plugin(name)


# ---- the example config --------------------------------------------------------------------------------
def test_example_file_keeps_its_comments():
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "//" in text and "/*" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # plain JSON cannot read it: the comments must be handled by load_config


def test_example_config_loads_with_its_values():
    cfg = load_config(str(EXAMPLE))
    assert isinstance(cfg, Config)
    assert cfg.base_dir == str(EXAMPLE.parent.resolve())
    assert (cfg.model.model_name, cfg.model.model, cfg.model.weights) == ("model", "model.xml", "model.bin")
    assert (cfg.engine.type, cfg.engine.data_source) == ("simplified", "calibration_data")
    comp = cfg.compression
    assert comp.target_device == "CPU"
    assert comp.model_type == "None" and normalize_model_type(comp.model_type) is None
    assert [a.name for a in comp.algorithms] == ["DefaultQuantization"]

    p = comp.algorithms[0].params
    assert isinstance(p, QuantizationParams)
    assert p.preset == "mixed"
    assert p.stat_subset_size == 300
    assert p.use_layerwise_tuning is False
    # inherited from the compression section, as POT does
    assert p.target_device == "CPU"
    assert p.inplace_statistics is True and p.dump_intermediate_model is False

    assert p.ignored.scope == ["<NODE_NAME>"]
    assert len(p.ignored.operations) == 1
    assert p.ignored.operations[0].type == "<NODE_TYPE>"
    assert p.ignored.operations[0].attributes == {"<NAME>": "<VALUE>"}

    w = p.weights
    assert (w.bits, w.mode, w.level_low, w.level_high, w.granularity) == (8, "symmetric", 0, 255, "perchannel")
    for side in (w.range_estimator.min, w.range_estimator.max):
        assert side.type == "quantile"
        assert side.outlier_prob == pytest.approx(1e-4)
        assert side.aggregator is None

    a = p.activations
    assert (a.bits, a.mode, a.granularity) == (8, "symmetric", "pertensor")
    assert a.level_low is None and a.level_high is None
    assert a.range_estimator.preset == "quantile"
    for side in (a.range_estimator.min, a.range_estimator.max):
        assert (side.type, side.aggregator) == ("quantile", "mean")
        assert side.outlier_prob == pytest.approx(1e-4)


def test_small_config_with_comments_and_defaults(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('/* head */ {"compression": {// line\n "algorithms": [{"name": "DefaultQuantization"}]}}\n')
    cfg = load_config(str(f))
    assert cfg.model is None and cfg.engine is None
    assert cfg.compression.target_device == "ANY"
    p = cfg.compression.algorithms[0].params
    assert p.preset == "performance" and p.stat_subset_size is None
    assert p.target_device == "ANY" and p.ignored.scope == []


def test_accuracy_preset_and_transformer_model_type_are_accepted():
    d = example()
    params(d)["preset"] = "accuracy"
    d["compression"]["model_type"] = "Transformer"
    p = config_from_dict(d).compression.algorithms[0].params
    assert p.preset == "accuracy"
    assert normalize_model_type(p.model_type) == "transformer"


# ---- broken variants: (id, mutation, key path, fragment of the message) --------------------------------
def _set(*keys, value):
    def mutate(d):
        x = params(d)
        for k in keys[:-1]:
            x = x[k]
        x[keys[-1]] = value
    return mutate


def _del(*keys):
    def mutate(d):
        x = d
        for k in keys[:-1]:
            x = x[k]
        del x[keys[-1]]
    return mutate


WRE = f"{P0}.weights.range_estimator"
ARE = f"{P0}.activations.range_estimator"

VARIANTS = [
    # unknown keys, at several depths
    ("unknown-param", _set("stat_batch_size", value=2), f"{P0}.stat_batch_size", "unknown key"),
    ("unknown-weights", _set("weights", "bit", value=8), f"{P0}.weights.bit", "unknown key"),
    ("unknown-estimator-key", _set("weights", "range_estimator", "max", "outlier", value=0.1),
     f"{WRE}.max.outlier", "unknown key (known: aggregator, aggregator_params, clipping_value, outlier_prob, params, type)"),
    ("unknown-ignored-op-key", lambda d: params(d)["ignored"]["operations"][0].update(attrs={}),
     f"{P0}.ignored.operations[0].attrs", "unknown key"),
    # wrong types
    ("string-for-int", _set("stat_subset_size", value="300"), f"{P0}.stat_subset_size",
     "expected an integer, got '300'"),
    ("float-for-int", _set("weights", "bits", value=8.5), f"{P0}.weights.bits", "expected an integer, got 8.5"),
    ("bool-for-int", _set("seed", value=True), f"{P0}.seed", "expected an integer, got true"),
    ("object-for-list", _set("ignored", "scope", value={"conv1": True}), f"{P0}.ignored.scope",
     "expected a list, got an object"),
    ("list-for-string", _set("preset", value=["mixed"]), f"{P0}.preset", "expected a string, got a list"),
    ("string-for-bool", lambda d: d["compression"].update(inplace_statistics="yes"),
     "compression.inplace_statistics", "expected true or false"),
    ("string-for-number", _set("threshold", value="2"), f"{P0}.threshold", "expected a number"),
    ("int-in-scope", _set("ignored", "scope", value=["conv1", 7]), f"{P0}.ignored.scope[1]", "expected a string"),
    ("list-for-params", lambda d: d["compression"]["algorithms"][0].update(params=[]), P0,
     "expected an object, got a list"),
    ("object-for-algorithms", lambda d: d["compression"].update(algorithms={"name": "DefaultQuantization"}),
     "compression.algorithms", "expected a list, got an object"),
    ("null-section", lambda d: d.update(compression=None), "compression", "expected an object, got null"),
    ("null-ignored", _set("ignored", value=None), f"{P0}.ignored", "expected an object, got null"),
    # unknown plugin names (the known list comes from the registry)
    ("unknown-estimator", _set("weights", "range_estimator", "max", "type", value="maxx"), f"{WRE}.max.type",
     "unknown estimator 'maxx' (known: abs_max, abs_quantile, max, min, quantile)"),   # no statistic-only name
    ("unknown-aggregator", _set("activations", "range_estimator", "min", "aggregator", value="avg"),
     f"{ARE}.min.aggregator", "unknown aggregator 'avg' (known: hl_estimator, max, mean, "),
    ("unknown-target", lambda d: d["compression"].update(target_device="XPU"), "compression.target_device",
     "unknown target device 'XPU' (known: ANY, CPU, "),
    ("unknown-target-in-params", _set("target_device", value="TPU"), f"{P0}.target_device",
     "unknown target device 'TPU'"),
    ("unknown-algorithm", lambda d: d["compression"]["algorithms"][0].update(name="DefaultQuantisation"),
     f"{A0}.name", "unknown algorithm 'DefaultQuantisation' (known: "),
    # values out of range
    ("bits-0", _set("weights", "bits", value=0), f"{P0}.weights.bits", "must be between 2 and 16, got 0"),
    ("bits-17", _set("activations", "bits", value=17), f"{P0}.activations.bits", "must be between 2 and 16"),
    ("level-low-ge-high", _set("weights", "level_low", value=255), f"{P0}.weights.level_low",
     "level_low 255 must be below level_high 255"),
    ("outlier-prob-0.5", _set("weights", "range_estimator", "min", "outlier_prob", value=0.5),
     f"{WRE}.min.outlier_prob", "must be in (0, 0.5), got 0.5"),
    ("outlier-prob-0", _set("activations", "range_estimator", "max", "outlier_prob", value=0),
     f"{ARE}.max.outlier_prob", "must be in (0, 0.5)"),
    ("outlier-prob-negative", _set("activations", "range_estimator", "min", "outlier_prob", value=-0.01),
     f"{ARE}.min.outlier_prob", "must be in (0, 0.5)"),
    ("subset-size-0", _set("stat_subset_size", value=0), f"{P0}.stat_subset_size", "must be at least 1"),
    ("bad-preset", _set("preset", value="fast"), f"{P0}.preset",
     "unknown preset 'fast' (known: performance, mixed, accuracy)"),
    ("bad-mode", _set("activations", "mode", value="sym"), f"{P0}.activations.mode",
     "unknown mode 'sym' (known: symmetric, asymmetric)"),
    ("bad-granularity", _set("weights", "granularity", value="perlayer"), f"{P0}.weights.granularity",
     "unknown granularity 'perlayer' (known: pertensor, perchannel)"),
    ("bad-range-preset", _set("activations", "range_estimator", "preset", value="max"), f"{ARE}.preset",
     "unknown range estimator preset 'max'"),
    ("bad-model-type", lambda d: d["compression"].update(model_type="Bert"), "compression.model_type",
     "unknown model type 'Bert' (known: None, Transformer)"),
    ("bad-model-type-in-params", _set("model_type", value="CNN"), f"{P0}.model_type", "unknown model type 'CNN'"),
    # ignored scope entries
    ("duplicate-scope", _set("ignored", "scope", value=["conv1", "fc", "conv1"]), f"{P0}.ignored.scope[2]",
     "duplicate entry 'conv1'"),
    ("empty-scope", _set("ignored", "scope", value=["conv1", ""]), f"{P0}.ignored.scope[1]", "empty node name"),
    ("blank-scope", _set("ignored", "scope", value=["   "]), f"{P0}.ignored.scope[0]", "empty node name"),
    ("duplicate-operation", _set("ignored", "operations", value=[{"type": "Add"}, {"type": "Add"}]),
     f"{P0}.ignored.operations[1]", "duplicate entry for type 'Add'"),
    # missing required keys
    ("missing-model-model", _del("model", "model"), "model.model", "missing required key"),
    ("missing-algorithm-name", _del("compression", "algorithms", 0, "name"), f"{A0}.name", "missing required key"),
    ("missing-operation-type", _del("compression", "algorithms", 0, "params", "ignored", "operations", 0, "type"),
     f"{P0}.ignored.operations[0].type", "missing required key"),
    ("no-algorithms", lambda d: d["compression"].update(algorithms=[]), "compression.algorithms",
     "no algorithm given"),
    # engine
    ("unknown-engine-type", lambda d: d["engine"].update(type="accuracy_checker"), "engine.type",
     "unknown engine type 'accuracy_checker' (known: simplified"),
    ("stat-requests-0", lambda d: d["engine"].update(stat_requests_number=0), "engine.stat_requests_number",
     "must be at least 1"),
]
assert len(VARIANTS) >= 25


@pytest.mark.parametrize("mutate,path,fragment", [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_broken_variant_names_its_key_path(mutate, path, fragment):
    d = example()
    mutate(d)
    msg = config_error(d)
    assert msg.startswith(f"{path}: "), msg
    assert fragment in msg, msg


def test_the_example_itself_is_not_broken():
    """Guards the variants above: without a mutation the example loads."""
    config_from_dict(example())


def test_known_lists_come_from_the_registry():
    """A name registered by a plugin is accepted and appears in the "known:" lists."""
    class ClipEstimator(Estimator):
        name = "test_clip"

    class TrimAggregator(Aggregator):
        name = "test_trim"

    class Plugin:
        @ovquant.hookimpl
        def register_estimators(self, register):
            register(ClipEstimator)

        @ovquant.hookimpl
        def register_aggregators(self, register):
            register(TrimAggregator)

    d = example()
    params(d)["weights"]["range_estimator"]["max"]["type"] = "test_clip"
    params(d)["activations"]["range_estimator"]["max"]["aggregator"] = "test_trim"
    with pytest.raises(ConfigError, match=r"\.max\.type: unknown estimator 'test_clip'"):
        config_from_dict(copy.deepcopy(d))
    name = registry.register_plugin(Plugin(), name="test_config.registry_names")
    try:
        p = config_from_dict(copy.deepcopy(d)).compression.algorithms[0].params
        assert p.weights.range_estimator.max.type == "test_clip"
        assert p.activations.range_estimator.max.aggregator == "test_trim"
        d2 = example()
        params(d2)["weights"]["range_estimator"]["min"]["type"] = "nope"
        params(d2)["activations"]["range_estimator"]["min"]["aggregator"] = "nope"
        msg = config_error(copy.deepcopy(d2))
        assert msg.startswith(f"{WRE}.min.type: unknown estimator 'nope' (known: ")
        assert "test_clip" in msg.split("(known: ")[1]
        params(d2)["weights"]["range_estimator"]["min"]["type"] = "max"
        msg = config_error(d2)
        assert msg.startswith(f"{ARE}.min.aggregator: ") and "test_trim" in msg
    finally:
        _unregister(name)
    assert "test_clip" not in registry.known("estimators")


# ---- file-level problems -------------------------------------------------------------------------------
def _load_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_invalid_json_names_the_file(tmp_path):
    f = tmp_path / "syntax.json"
    f.write_text('{\n  "compression": {\n    "algorithms": [\n      {"name": "DefaultQuantization"\n    ]\n  }\n}\n')
    msg = _load_error(f)
    assert msg.startswith(f"{f}: not valid JSON"), msg
    assert "line 5" in msg


def test_duplicate_json_keys_are_an_error(tmp_path):
    f = tmp_path / "dup.json"
    f.write_text('{"model": {"model": "a.xml", "model": "b.xml"}, "compression": {"algorithms": []}}')
    msg = _load_error(f)
    assert msg.startswith(f"{f}: ") and "Duplicate key \"model\"" in msg, msg


def test_missing_file(tmp_path):
    f = tmp_path / "nowhere" / "config.json"
    assert _load_error(f) == f"{f}: no such file"


def test_empty_and_non_object_files(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert _load_error(empty).startswith(f"{empty}: not valid JSON")
    lst = tmp_path / "list.json"
    lst.write_text("[]")
    assert _load_error(lst) == "<top>: expected an object, got a list"


# ---- the CLI -------------------------------------------------------------------------------------------
CLI_VARIANTS = [v for v in VARIANTS if v[0] in {
    "unknown-param", "unknown-estimator-key", "string-for-int", "float-for-int", "bool-for-int",
    "object-for-list", "list-for-string", "unknown-estimator", "unknown-aggregator", "unknown-target",
    "unknown-algorithm", "bits-17", "level-low-ge-high", "outlier-prob-0.5", "bad-preset", "bad-granularity",
    "duplicate-scope", "missing-model-model", "missing-algorithm-name", "unknown-engine-type", "null-section",
}]
assert len(CLI_VARIANTS) >= 10


def _check_cli_error(proc: subprocess.CompletedProcess, fragment: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ovquant: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("mutate,path,fragment", [v[1:] for v in CLI_VARIANTS], ids=[v[0] for v in CLI_VARIANTS])
def test_cli_reports_a_broken_config_in_one_line(tmp_path, mutate, path, fragment):
    d = example()
    algo = _builtin_algorithm()  # the subprocess has only the built-in plugins
    if path != f"{A0}.name":
        d["compression"]["algorithms"][0]["name"] = algo
    mutate(d)
    f = tmp_path / "config.json"
    f.write_text(json.dumps(d, indent=2))
    line = _check_cli_error(run_cli("quantize", "-c", str(f), cwd=tmp_path), fragment)
    assert line.startswith(f"ovquant: error: {path}: "), line


def test_cli_invalid_json_and_missing_file(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('{"compression": {"algorithms": [}')
    _check_cli_error(run_cli("quantize", "-c", str(f), cwd=tmp_path), f"{f}: not valid JSON")
    missing = tmp_path / "missing.json"
    _check_cli_error(run_cli("quantize", "-c", str(missing), cwd=tmp_path), f"{missing}: no such file")


def test_cli_plugins_lists_the_builtins_with_their_package(tmp_path):
    proc = run_cli("plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in proc.stdout.splitlines():
        if line and not line.startswith(" "):
            current = sections.setdefault(line.rstrip(":"), {})
        elif line.strip() and line.strip() != "(none)":
            name, rest = line.split(None, 1)
            current[name] = rest
    package = f"ovquant {ovquant.__version__}"
    expected = {
        "Range estimators": ("max", "min", "abs_max", "quantile", "abs_quantile"),
        "Statistics for algorithms": ("mean", "window_mean", "input_gram", "fq_mse"),
        "Aggregators": ("mean", "max", "min", "median", "mean_no_outliers", "median_no_outliers", "hl_estimator"),
        "Hardware targets": ("CPU", "GPU", "NPU"),
    }
    for title, names in expected.items():
        assert title in sections, proc.stdout
        for name in names:
            assert name in sections[title], f"{title}: {name} missing in\n{proc.stdout}"
            assert sections[title][name].startswith(package), sections[title][name]
    assert "Algorithms" in sections and sections["Algorithms"]
    assert not set(sections["Range estimators"]) & set(sections["Statistics for algorithms"]), proc.stdout


# ---- the plugin manager --------------------------------------------------------------------------------
@pytest.fixture
def plugin_names():
    """Names of plugins a test registers; unregistered afterwards whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        _unregister(name)
    registry.get_registry()  # the built-ins alone build again


def test_duplicate_estimator_name_names_both_plugins(plugin_names):
    class OtherMax(Estimator):
        name = "max"

    class Plugin:
        @ovquant.hookimpl
        def register_estimators(self, register):
            register(OtherMax)

    plugin_names.append(registry.register_plugin(Plugin(), name="test_config.dup_max"))
    with pytest.raises(PluginError) as info:
        registry.get_registry()
    msg = str(info.value)
    assert "'max'" in msg
    assert "ovquant.plugins.estimators.max" in msg
    assert "test_config.dup_max" in msg


def test_raising_register_hook_names_plugin_and_hook(plugin_names):
    class Plugin:
        @ovquant.hookimpl
        def register_aggregators(self, register):
            raise RuntimeError("boom")

    plugin_names.append(registry.register_plugin(Plugin(), name="test_config.raising"))
    with pytest.raises(PluginError) as info:
        registry.get_registry()
    msg = str(info.value)
    assert "test_config.raising" in msg
    assert "register_aggregators" in msg
    assert "boom" in msg


def test_plugin_needing_a_newer_api_is_refused(plugin_names):
    mod = types.ModuleType("test_config_future_plugin")
    mod.ovquant_api_version = 999

    class FutureEstimator(Estimator):
        name = "test_future"

    @ovquant.hookimpl
    def register_estimators(register):
        register(FutureEstimator)

    mod.register_estimators = register_estimators
    plugin_names.append("test_config_future_plugin")
    with pytest.raises(PluginError) as info:
        registry.register_plugin(mod)
    msg = str(info.value)
    assert "test_config_future_plugin" in msg
    assert "999" in msg
    assert registry.get_plugin_manager().get_plugin("test_config_future_plugin") is None
    assert "test_future" not in registry.known("estimators")


def test_registry_is_whole_again_after_plugin_tests():
    """The plugin tests above unregistered their plugins: the registry builds and has the built-ins."""
    assert {"max", "min", "abs_max", "quantile", "abs_quantile"} <= set(registry.known("estimators"))
    assert not any(n.startswith("test_") for n in registry.known("estimators") + registry.known("aggregators"))
