"""The example third-party package (examples/ovquant-example-plugin) extends ovquant with no change to it.

The package is installed next to ovquant (.ci/run does). Outside CI a missing package skips this
module; with CI=true it is an error. Tests run with OVQUANT_DISABLE_PLUGIN_AUTOLOAD=1, so the plugin
module is registered explicitly here; entry-point discovery is checked in subprocesses without it.
"""
import copy
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from ovquant import hookimpl, registry
from ovquant.engine import Engine
from ovquant.errors import ConfigError, PluginError
from ovquant.statistics import Statistic, TensorRef

try:
    import ovquant_example_plugin.plugin as example
except ImportError:
    if os.environ.get("CI", "").lower() == "true":
        raise   # CI installs the example package (.ci/run): missing is a failure, not a skip
    pytest.skip("ovquant-example-plugin is not installed (pip install ./examples/ovquant-example-plugin)",
                allow_module_level=True)

from importlib.metadata import version as dist_version
from importlib.resources import files

from ovquant_example_plugin import usage
from ovquant_example_plugin.mse_range import MSERangeEstimator, MSERangeW4Estimator
from ovquant_example_plugin.trimmed_mean import TrimmedMeanAggregator
from ovquant.quant_math import fake_quantize

PLUGIN = "ovquant-example-plugin (test)"
DIST = "ovquant-example-plugin"
FOUR = {"estimators": "mse_range", "aggregators": "trimmed_mean", "algorithms": "SQNRReport",
        "hw_targets": "CPU_W4A8"}
ACT_RANGE = {"range_estimator": {"max": {"type": "mse_range", "aggregator": "trimmed_mean"}}}


@pytest.fixture(scope="module")
def plugin():
    name = registry.register_plugin(example, name=PLUGIN)
    yield example
    registry.unregister_plugin(name)


def _autoload_env():
    env = dict(os.environ)
    env.pop("OVQUANT_DISABLE_PLUGIN_AUTOLOAD", None)
    return env


# ---- registration ----------------------------------------------------------------------------------
def test_plugin_module_declares_hook_api_version_1():
    assert example.ovquant_api_version == 1


def test_registers_the_four_things(plugin):
    reg = registry.get_registry()
    for kind, name in FOUR.items():
        entry = reg.get(kind, name)
        assert entry.plugin == PLUGIN
    assert registry.lookup("hw_targets", "cpu_w4a8").name == "CPU_W4A8"   # target names ignore case
    assert {"mse_range_w4", "sqnr_terms"} <= set(registry.known("estimators"))


def test_entry_point_discovery_lists_the_four_with_the_package():
    """`ovquant plugins` with autoload on finds the package through its entry point."""
    out = subprocess.run([sys.executable, "-m", "ovquant.cli", "plugins"], env=_autoload_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    package = f"{DIST} {dist_version(DIST)}"
    lines = out.stdout.splitlines()
    for name in FOUR.values():
        hits = [ln for ln in lines if ln.split() and ln.split()[0] == name]
        assert len(hits) == 1, (name, out.stdout)
        assert package in hits[0] and hits[0].rstrip().endswith("example"), hits[0]


def test_plugin_needing_a_newer_hook_api_is_refused():
    future = types.ModuleType("ovquant_example_plugin_future")
    future.ovquant_api_version = 99
    future.register_estimators = example.register_estimators
    with pytest.raises(PluginError) as info:
        registry.register_plugin(future)
    msg = str(info.value)
    assert "'ovquant_example_plugin_future'" in msg and "version 99" in msg and "\n" not in msg
    assert registry.get_plugin_manager().get_plugin("ovquant_example_plugin_future") is None   # not registered


def test_malformed_target_names_the_plugin(tmp_path):
    data = json.loads((files("ovquant_example_plugin") / "cpu_w4a8.json").read_text(encoding="utf-8"))
    data["name"] = "CPU_W4A8_BROKEN"
    data["schemes"]["q4_w"]["level_low"] = -9          # [-9, 7]: 17 levels do not fit in 4 bits
    bad = tmp_path / "broken_w4a8.json"
    bad.write_text(json.dumps(data), encoding="utf-8")

    class BrokenTargetPlugin:
        @hookimpl
        def register_hw_targets(self, register):
            register(bad)

    name = registry.register_plugin(BrokenTargetPlugin(), name="broken_w4a8_plugin")
    try:
        with pytest.raises(PluginError) as info:
            registry.get_registry()
    finally:
        registry.unregister_plugin(name)
    msg = str(info.value)
    assert "plugin 'broken_w4a8_plugin' registered a malformed hardware target" in msg
    assert f"{bad}: schemes.q4_w: levels [-9,7] do not fit in 4 bits" in msg
    assert registry.lookup("hw_targets", "CPU").name == "CPU"   # the registry builds again


# ---- mse_range -------------------------------------------------------------------------------------
def _brute_force(x, est_cls=MSERangeEstimator):
    """Reference: the MSE of every candidate, quantizing with a plain loop; returns (errors, m, signed)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    m, signed = (np.abs(x).max(), x.min() < 0) if x.size else (0.0, False)
    lo, hi = est_cls.signed_levels if signed else est_cls.unsigned_levels
    errs = []
    for f in est_cls.fractions():
        s = f * m / hi
        q = np.clip(np.rint(x / s), lo, hi) * s if s > 0 else np.zeros_like(x)
        errs.append(float(((x - q) ** 2).sum()))
    return np.array(errs), m, signed


def _samples(rng, n):
    yield "normal", rng.standard_normal(n)
    yield "laplace", rng.laplace(size=n) * 3
    yield "relu", np.maximum(rng.standard_normal(n), 0)
    yield "student_t2", rng.standard_t(2, size=n)
    yield "outlier", np.concatenate([rng.standard_normal(n - 1) * 0.1, [25.0]])
    yield "uniform_pos", rng.uniform(0.5, 2.0, size=n)


@pytest.mark.parametrize("est_cls", [MSERangeEstimator, MSERangeW4Estimator])
def test_mse_range_small_slices_are_the_exact_optimum(est_cls):
    rng = np.random.default_rng(0)
    for label, x in _samples(rng, 1500):
        x = x.astype(np.float32)
        errs, m, signed = _brute_force(x, est_cls)
        best = est_cls.fractions()[len(errs) - 1 - np.argmin(errs[::-1])]
        t = est_cls("max").reduce(x[None], (1,))
        np.testing.assert_allclose(t, [best * m], rtol=1e-6, err_msg=label)
        lo, hi = est_cls.signed_levels if signed else est_cls.unsigned_levels
        np.testing.assert_allclose(est_cls("min").reduce(x[None], (1,)), [best * m * lo / hi], rtol=1e-6, atol=0,
                                   err_msg=label)


@pytest.mark.parametrize("est_cls", [MSERangeEstimator, MSERangeW4Estimator])
def test_mse_range_large_slices_reach_the_optimum_through_the_histogram(est_cls):
    rng = np.random.default_rng(1)
    for label, x in _samples(rng, 50_000):
        x = x.astype(np.float32)
        errs, m, _ = _brute_force(x, est_cls)
        t = float(est_cls("max").reduce(x[None], (1,))[0])
        got = _brute_force_error_at(x, t, est_cls)
        assert got <= errs.min() * (1 + 1e-3), (label, t / m, got / errs.min())


def _brute_force_error_at(x, t, est_cls):
    x = np.asarray(x, np.float64)
    lo, hi = est_cls.signed_levels if x.min() < 0 else est_cls.unsigned_levels
    s = t / hi
    return float(((x - np.clip(np.rint(x / s), lo, hi) * s) ** 2).sum())


def test_mse_range_clips_outliers_and_keeps_a_clean_range():
    rng = np.random.default_rng(2)
    x = rng.standard_t(2, 50_000).astype(np.float32)[None]              # heavy tails: clipping pays
    assert MSERangeEstimator("max").reduce(x, (1,))[0] < 0.9 * np.abs(x).max()
    # one lone outlier is kept: clipping it would cost more squared error than the coarser step
    y = np.concatenate([rng.standard_normal(5000) * 0.1, [25.0]]).astype(np.float32)[None]
    assert MSERangeEstimator("max").reduce(y, (1,))[0] > 0.9 * 25
    u = rng.uniform(-1, 1, 5000).astype(np.float32)[None]
    assert MSERangeEstimator("max").reduce(u, (1,))[0] == pytest.approx(np.abs(u).max())


def test_mse_range_per_channel_and_special_values():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 10, 10)).astype(np.float32) * np.array([0.1, 1.0, 10.0], np.float32)[:, None, None]
    x[1, 2] = 0.0                           # an all-zero slice: threshold 0
    x[0, 1, 0, 0] = np.nan                  # non-finite values are ignored by the numpy form
    t = MSERangeEstimator("max").reduce(x, (2, 3))
    assert t.shape == (2, 3) and t[1, 2] == 0.0
    ref = MSERangeEstimator("max").reduce(np.where(np.isnan(x), 0, x)[0:1, 1:2], (2, 3))
    assert t[0, 1] == pytest.approx(ref[0, 0])
    for b in range(2):
        for c in range(3):
            if (b, c) == (1, 2):
                continue
            xs = x[b, c][np.isfinite(x[b, c])]
            errs, m, _ = _brute_force(xs)
            best = MSERangeEstimator.fractions()[len(errs) - 1 - np.argmin(errs[::-1])]
            assert t[b, c] == pytest.approx(best * m, rel=1e-6)


def _run_graph_form(est, x, axes):
    p = ops.parameter(list(x.shape), np.float32)
    out = est.graph_reduce(p.output(0), axes)
    if out is None:
        return None
    compiled = ov.Core().compile_model(ov.Model([ops.result(out)], [p]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return est.from_graph(compiled(x)[0])


@pytest.mark.parametrize("shape,axes", [((2, 4, 30, 30), (1, 2, 3)),     # per tensor
                                         ((2, 3, 64, 64), (2, 3)),        # per channel, 4096 values each
                                         ((3, 5000), (1,)),
                                         ((6000,), (0,))])                # rank 1: one sample, reduced whole
@pytest.mark.parametrize("side", ["max", "min"])
def test_mse_range_in_graph_form_agrees_with_numpy(shape, axes, side):
    rng = np.random.default_rng(4)
    x = rng.laplace(size=shape).astype(np.float32)
    if len(shape) == 4:
        x[:, 0] = np.maximum(x[:, 0], 0)            # a non-negative slice (per channel) / tensor part
    graph = _run_graph_form(MSERangeEstimator(side), x, axes)
    assert graph is not None
    np.testing.assert_allclose(graph, MSERangeEstimator(side).reduce(x, axes), rtol=1e-6)


def test_mse_range_has_no_in_graph_form_for_small_or_huge_outputs():
    p = ops.parameter([1, 8, 16, 16], np.float32)
    assert MSERangeEstimator("max").graph_reduce(p.output(0), (1, 2, 3)) is None     # 2048 values: exact, numpy
    wide = ops.parameter([1, 512, 64, 64], np.float32)                                # 512 channel histograms
    assert MSERangeEstimator("max").graph_reduce(wide.output(0), (2, 3)) is None
    assert MSERangeEstimator("max").graph_reduce(wide.output(0), (1, 2, 3)) is not None


# ---- trimmed_mean ----------------------------------------------------------------------------------
def _trimmed_reference(x, trim):
    """Per column: sort the finite values, drop floor(trim * n) at each end, average the rest."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    out = []
    for col in x.T:
        v = np.sort(col[np.isfinite(col)])
        k = int(math.floor(trim * len(v)))
        out.append(v[k:len(v) - k].mean() if len(v) else np.nan)
    return np.array(out)


@pytest.mark.parametrize("trim", [0.0, 0.1, 0.25, 0.49])
@pytest.mark.parametrize("n", [1, 2, 7, 10, 31])
def test_trimmed_mean_matches_numpy(trim, n):
    rng = np.random.default_rng(n)
    x = rng.standard_t(2, size=(n, 3, 4)).astype(np.float32)
    agg = TrimmedMeanAggregator(trim)
    for i in range(0, n, 3):          # folded in several updates, as the engine does
        agg.update(x[i:i + 3])
    got = agg.result()
    assert got.shape == (3, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got.ravel(), _trimmed_reference(x, trim), rtol=1e-6)
    if trim == 0.0:
        np.testing.assert_allclose(got, x.astype(np.float64).mean(axis=0), rtol=1e-6)


def test_trimmed_mean_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(5).laplace(size=(40, 6))
    agg = TrimmedMeanAggregator(0.2)
    agg.update(x)
    np.testing.assert_allclose(agg.result(), stats.trim_mean(x, 0.2, axis=0), rtol=1e-6)


def test_trimmed_mean_default_non_finite_and_bad_trim():
    assert TrimmedMeanAggregator().trim == 0.1
    agg = TrimmedMeanAggregator(0.25)
    agg.update(np.array([[1.0, np.nan], [2.0, np.inf], [3.0, -np.inf], [100.0, np.nan], [np.nan, np.nan]]))
    got = agg.result()
    assert got[0] == pytest.approx(2.5)       # 4 finite values, one dropped at each end
    assert np.isnan(got[1])                   # no finite value at all
    agg = TrimmedMeanAggregator()
    agg.update(np.float32(4.0))               # a 0-d value is one sample
    assert agg.result().shape == () and float(agg.result()) == 4.0
    for bad in (-0.1, 0.5, 1.0):
        with pytest.raises(ValueError, match="trim must be in"):
            TrimmedMeanAggregator(bad)


# ---- through the engine ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net():
    m = models.conv_net(hw=32)       # activations of 3072..8192 values: histogram path; gap: exact path
    samples = models.random_samples(m, 12, seed=7)
    return m, samples


def test_engine_in_graph_and_numpy_statistics_agree_and_match_reference(plugin, net):
    m, samples = net
    names = ["image", "relu1", "conv2/add", "relu3", "gap"]
    acts = models.activations(m, names, samples)
    stats = {}
    for n in names:
        stats[(n, "max")] = Statistic.make(TensorRef(n), "mse_range", "trimmed_mean", None, {"side": "max"})
        stats[(n, "min")] = Statistic.make(TensorRef(n), "mse_range", "trimmed_mean", None, {"side": "min"})
        stats[(n, "t25")] = Statistic.make(TensorRef(n), "mse_range", "trimmed_mean", None, {"side": "max"},
                                           aggregator_params={"trim": 0.25})
    eng_graph, eng_np = Engine(inplace_statistics=True), Engine(inplace_statistics=False)
    g = eng_graph.collect(m, list(stats.values()), samples)
    assert eng_graph.last_run["n_in_graph"] > 0
    nump = eng_np.collect(m, list(stats.values()), samples)
    assert eng_np.last_run["n_in_graph"] == 0
    for n in names:
        a = acts[n]
        per_sample = {side: np.array([MSERangeEstimator(side).reduce(s, tuple(range(1, s.ndim)))[0] for s in a])
                      for side in ("max", "min")}
        for key, side, trim in (("max", "max", 0.1), ("min", "min", 0.1), ("t25", "max", 0.25)):
            ref = _trimmed_reference(per_sample[side][:, None], trim)[0]
            np.testing.assert_allclose(nump[stats[(n, key)]], ref, rtol=1e-6, err_msg=n)
            np.testing.assert_allclose(g[stats[(n, key)]], ref, rtol=1e-5, err_msg=n)


# ---- the four together in a pipeline -----------------------------------------------------------------
def _config(first="MinMaxQuantization", **params):
    return {"compression": {"target_device": "CPU_W4A8", "algorithms": [
        {"name": first, "params": {"stat_subset_size": 12, "activations": ACT_RANGE, **params}},
        {"name": "SQNRReport", "params": {"worst": 3}}]}}


def _fq_inputs(model):
    """FakeQuantize nodes of ``model`` with constant ranges, by name."""
    return {n.get_friendly_name(): n for n in model.get_ordered_ops() if n.get_type_name() == "FakeQuantize"}


def test_quantize_with_all_four(plugin, net):
    import ovquant

    m, samples = net
    q, report = ovquant.quantize_with_report(m, samples, _config())
    assert report["target_device"] == "CPU_W4A8"
    assert report["pipeline"] == ["MinMaxQuantization", "SQNRReport"]
    assert [s["algorithms"] for s in report["stages"]] == [["MinMaxQuantization"], ["SQNRReport"]]
    mm, sq = report["algorithms"]
    acts = [e for e in mm["quantizers"] if e["kind"] == "activations"]
    weights = [e for e in mm["quantizers"] if e["kind"] == "weights"]
    # CPU_W4A8: every weight quantizer is 4-bit symmetric per channel on [-7, 7]
    assert len(weights) == 4 and {e["levels"] for e in weights} == {15}
    assert {e["scheme"] for e in weights} == {"4-bit symmetric perchannel [-7,7]"}
    assert acts and {e["levels"] for e in acts} == {256}

    # mse_range + trimmed_mean made the activation ranges: the max border is the trimmed mean of the
    # per-sample MSE-optimal thresholds of the FP32 activations
    tensors = [e["tensor"].split(":")[0] for e in acts]
    fp32 = models.activations(m, tensors, samples)
    for e, name in zip(acts, tensors):
        per_sample = np.array([MSERangeEstimator("max").reduce(s, tuple(range(1, s.ndim)))[0] for s in fp32[name]])
        hi = _trimmed_reference(per_sample[:, None], 0.1)[0]
        assert e["range"][1] == pytest.approx(hi, rel=1e-5, abs=1e-6), name
        assert e["range"][0] == (0.0 if fp32[name].min() >= 0 else pytest.approx(-hi * 128 / 127, rel=1e-5))

    # SQNRReport ran on the quantized model in its own stage: one entry per FakeQuantize
    assert sq["name"] == "SQNRReport"
    assert {e["fake_quantize"] for e in sq["entries"]} == {e["name"] for e in mm["quantizers"]}
    assert all(isinstance(e["sqnr_db"], float) and e["sqnr_db"] > 5 for e in sq["entries"])
    assert {e["levels"] for e in sq["entries"] if e["kind"] == "weights"} == {15}
    assert sq["summary"]["n_fake_quantize"] == len(mm["quantizers"]) and len(sq["worst"]) == 3
    # 4-bit weights are much noisier than 8-bit activations
    assert sq["summary"]["weights"]["median_sqnr_db"] < sq["summary"]["activations"]["median_sqnr_db"]
    use = sq["example_plugin_usage"]
    assert use["mse_range"]["slices_in_graph"] > 0 and use["mse_range"]["slices_numpy"] > 0
    assert use["trimmed_mean"] == {"aggregations": len(acts), "trims": [0.1]}

    # the activation SQNR, recomputed here from the quantized model's FakeQuantize inputs
    fqs = _fq_inputs(q)
    probe = q.clone()
    nodes = {n.get_friendly_name(): n for n in probe.get_ordered_ops()}
    entries = [e for e in sq["entries"] if e["kind"] == "activations"]
    probe.add_outputs([nodes[e["tensor"].split(":")[0]].output(0) for e in entries])
    compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    sig, noise = np.zeros(len(entries)), np.zeros(len(entries))
    for s in samples:
        res = compiled(s)
        for i, e in enumerate(entries):
            x = np.asarray(res[len(q.outputs) + i], np.float64)
            fq = fqs[e["fake_quantize"]]
            il, ih, ol, oh = (np.asarray(fq.input_value(k).get_node().get_data(), np.float64) for k in range(1, 5))
            sig[i] += np.mean(x * x) / len(samples)
            noise[i] += np.mean((fake_quantize(x, il, ih, fq.get_attributes()["levels"], ol, oh) - x) ** 2) / len(samples)
    for i, e in enumerate(entries):
        assert e["sqnr_db"] == pytest.approx(10 * np.log10(sig[i] / noise[i]), abs=0.02), e["fake_quantize"]

    _check_runs_as_w4a8(m, q, samples)


def _check_runs_as_w4a8(m, q, samples):
    """The compressed IR stores the 4-bit weights as i4 and runs on CPU, close to FP32."""
    const_types = {str(n.get_element_type()) for n in q.get_ordered_ops() if n.get_type_name() == "Constant"}
    assert "<Type: 'int4_t'>" in const_types or "i4" in const_types
    assert not [n for n in q.get_ordered_ops() if n.get_type_name() == "FakeQuantize"
                and n.input_value(0).get_node().get_type_name() == "Constant"]   # weight FQs were folded
    core = ov.Core()
    cq = core.compile_model(q, "CPU")
    cf = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    a = np.concatenate([np.asarray(cf(s)[0]).ravel() for s in samples])
    b = np.concatenate([np.asarray(cq(s)[0]).ravel() for s in samples])
    assert np.all(np.isfinite(b))
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.9


def test_quantize_after_default_quantization_with_4bit_weight_ranges(plugin, net):
    import ovquant

    m, samples = net
    cfg = _config("DefaultQuantization", weights={"range_estimator": {"max": {"type": "mse_range_w4"}}})
    q, report = ovquant.quantize_with_report(m, samples, cfg)
    assert report["pipeline"] == ["ActivationChannelAlignment", "MinMaxQuantization", "FastBiasCorrection",
                                  "ActivationGranularityChoice", "SQNRReport"]   # timing off in tests (conftest)
    sq = report["algorithms"][-1]
    use = sq["example_plugin_usage"]
    assert use["mse_range_w4"]["slices_numpy"] > 0 and use["trimmed_mean"]["aggregations"] > 0
    # the 4-bit MSE ranges clip some weight channels, and beat abs_max on weight SQNR
    mm = next(a for a in report["algorithms"] if a["name"] == "MinMaxQuantization")
    _, plain = ovquant.quantize_with_report(m, samples, _config("DefaultQuantization"))
    sqnr = lambda rep: {e["fake_quantize"]: e["sqnr_db"] for e in rep["algorithms"][-1]["entries"] if e["kind"] == "weights"}
    mse, absmax = sqnr(report), sqnr(plain)
    assert len(mse) == 4 and all(mse[k] >= absmax[k] - 1e-6 for k in mse)
    assert sum(mse.values()) > sum(absmax.values())
    assert {e["levels"] for e in mm["quantizers"] if e["kind"] == "weights"} == {15}
    _check_runs_as_w4a8(m, q, samples)


def test_sqnr_report_params_are_validated(plugin):
    import ovquant
    m = models.conv_net()
    cfg = _config()
    cfg["compression"]["algorithms"][1]["params"] = {"worst": -1}
    with pytest.raises(ConfigError, match=r"compression\.algorithms\[1\]\.params\.worst: must be at least 0"):
        ovquant.quantize(m, models.random_samples(m, 2), cfg)
    cfg["compression"]["algorithms"][1]["params"] = {"colour": 1}
    with pytest.raises(ConfigError, match=r"compression\.algorithms\[1\]\.params\.colour: unknown key"):
        ovquant.quantize(m, models.random_samples(m, 2), cfg)


def test_usage_counters_reset_at_each_run(plugin, net):
    import ovquant

    m, samples = net
    usage.count("trimmed_mean", 1000)         # left over from elsewhere: stage 1 of the next run resets it
    _, report = ovquant.quantize_with_report(m, samples[:4], _config(stat_subset_size=4))
    acts = [e for e in report["algorithms"][0]["quantizers"] if e["kind"] == "activations"]
    assert report["algorithms"][-1]["example_plugin_usage"]["trimmed_mean"]["aggregations"] == len(acts)


# ---- the command line, with the package found through its entry point --------------------------------
def test_cli_quantize_with_config_naming_all_four(tmp_path, net):
    m, samples = net
    ov.save_model(m, str(tmp_path / "net.xml"), compress_to_fp16=False)
    np.save(tmp_path / "calib.npy", np.stack(samples))
    cfg = _config("DefaultQuantization", weights={"range_estimator": {"max": {"type": "mse_range_w4"}}})
    cfg["model"] = {"model_name": "net_w4a8", "model": "net.xml"}
    cfg["engine"] = {"data_source": "calib.npy"}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "ovquant.cli", "quantize", "-c", str(tmp_path / "cfg.json"),
                          "-o", str(tmp_path / "out"), "--no-cache", "--no-progress"],
                         env=_autoload_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "out" / "net_w4a8.report.json").read_text(encoding="utf-8"))
    assert report["target_device"] == "CPU_W4A8" and report["pipeline"][-1] == "SQNRReport"
    sq = report["algorithms"][-1]
    assert sq["example_plugin_usage"]["mse_range"]["slices_in_graph"] > 0
    assert sq["example_plugin_usage"]["trimmed_mean"]["aggregations"] > 0
    assert {e["levels"] for e in sq["entries"] if e["kind"] == "weights"} == {15}
    q = ov.Core().read_model(str(tmp_path / "out" / "net_w4a8.xml"))
    _check_runs_as_w4a8(m, q, samples)


# ---- estimator and aggregator params from the config (docs/plugins.md) -------------------------------
W4_PARAMS = {"type": "mse_range", "params": {"signed_levels": [-7, 7], "unsigned_levels": [0, 15]}}


def test_a_parameterized_estimator_replaces_a_subclass_per_setting(plugin, net):
    """``mse_range`` with the 4-bit grids as params gives the model ``mse_range_w4`` gives, byte for byte."""
    import ovquant

    m, samples = net
    by_params = ovquant.quantize(m, samples, _config(weights={"range_estimator": {"max": W4_PARAMS}}))
    by_name = ovquant.quantize(m, samples, _config(weights={"range_estimator": {"max": {"type": "mse_range_w4"}}}))
    weights = lambda q: [n.get_data().tobytes() for n in q.get_ordered_ops() if n.get_type_name() == "Constant"]
    assert weights(by_params) == weights(by_name)
    plain = ovquant.quantize(m, samples, _config())
    assert weights(by_params) != weights(plain)


def test_aggregator_params_reach_the_aggregator(plugin, net):
    import ovquant

    m, samples = net
    act = {"range_estimator": {"max": {"type": "mse_range", "aggregator": "trimmed_mean",
                                       "aggregator_params": {"trim": 0.25}}}}
    _, report = ovquant.quantize_with_report(m, samples, _config(activations=act))
    use = report["algorithms"][-1]["example_plugin_usage"]
    assert use["trimmed_mean"]["trims"] == [0.25]   # every activation range was aggregated with trim 0.25


@pytest.mark.parametrize("border,path,message", [
    ({"type": "mse_range", "params": {"bin": 1}}, "max.params.bin",
     "unknown key (known: bins, signed_levels, unsigned_levels)"),
    ({"type": "mse_range", "params": {"bins": "many"}}, "max.params.bins", "expected an integer, got 'many'"),
    ({"type": "mse_range", "params": {"bins": 4}}, "max.params.bins", "must be between 16 and 65536, got 4"),
    ({"type": "mse_range", "params": {"signed_levels": [0, 7]}}, "max.params.signed_levels",
     "expected [lo, hi] with lo < 0 < hi, got [0, 7]"),
    ({"type": "mse_range", "aggregator": "trimmed_mean", "aggregator_params": {"trim": 0.7}},
     "max.aggregator_params.trim", "must be in [0, 0.5), got 0.7"),
    ({"type": "abs_max", "params": {"bins": 1}}, "max.params.bins", "unknown key (estimator 'abs_max' takes no params)"),
    ({"params": {"bins": 1024}}, "max.params", "params need the estimator they are for: give max.type too"),
])
def test_estimator_params_are_checked_against_the_declaration(plugin, border, path, message):
    from ovquant.config import config_from_dict

    cfg = _config(activations={"range_estimator": {"max": border}})
    with pytest.raises(ConfigError) as info:
        config_from_dict(cfg)
    assert str(info.value) == f"compression.algorithms[0].params.activations.range_estimator.{path}: {message}"


def test_estimator_params_are_part_of_the_request_key(plugin):
    """Borders that differ only in their params are collected separately; a param given at its default is
    the same request as none (collected once, cached under the same key)."""
    from ovquant.config import config_from_dict
    from ovquant.plugins.algorithms.range_config import estimator_config

    def request(border):
        p = config_from_dict(_config(activations={"range_estimator": {"max": border}})).compression.algorithms[0].params
        spec = estimator_config(p, "activations", "symmetric", "pertensor")["max"]
        from ovquant.plugins.algorithms.range_config import border_statistic
        return border_statistic(TensorRef("relu1"), "max", spec, None)

    plain, default = request({"type": "mse_range"}), request({"type": "mse_range", "params": {"bins": 2048}})
    other = request({"type": "mse_range", "params": {"bins": 1024}})
    assert plain == default and hash(plain) == hash(default)
    assert other != plain and dict(other.estimator_params)["bins"] == 1024
    groups, estimators = Engine._group([plain, default, other])
    assert len(groups) == 2
    assert {estimators[k].bins for k in groups} == {2048, 1024}


def test_cli_estimator_param_error_is_one_line_with_exit_2(tmp_path, net):
    m, samples = net
    ov.save_model(m, str(tmp_path / "net.xml"), compress_to_fp16=False)
    np.save(tmp_path / "calib.npy", np.stack(samples))
    cfg = _config(activations={"range_estimator": {"max": {"type": "mse_range", "params": {"bins": 4}}}})
    cfg["model"] = {"model_name": "net", "model": "net.xml"}
    cfg["engine"] = {"data_source": "calib.npy"}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "ovquant.cli", "quantize", "-c", str(tmp_path / "cfg.json"),
                          "-o", str(tmp_path / "out"), "--no-cache", "--no-progress"],
                         env=_autoload_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "ovquant: error: compression.algorithms[0].params.activations.range_estimator.max.params.bins: "
        "must be between 16 and 65536, got 4"], out.stderr
    assert not (tmp_path / "out").exists()


def test_the_example_config_gives_the_weight_grid_as_estimator_params(plugin):
    from ovquant.config import load_config
    from ovquant.plugins.algorithms.params import border_plugin_params

    # the config ships beside the package in the repository (not inside it): read it from the checkout
    cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                                   "ovquant-example-plugin", "imagenet_lite0.json"))
    border = cfg.compression.algorithms[0].params.weights.range_estimator.max
    assert border.type == "mse_range"
    assert border_plugin_params(border, "max") == {"params": {"signed_levels": (-7, 7), "unsigned_levels": (0, 15)}}
