"""The contracts an algorithm may rely on (docs/plugins.md, "What an algorithm may rely on"): channel
transforms between the algorithms of a stage, one aggregation path, requests kept from ``statistics``
to ``apply``, and the shared FakeQuantize math, each checked on real OpenVINO runs or against numpy."""
import numpy as np
import openvino as ov
import pytest

import models
import ovquant
from ovquant import registry
from ovquant.algorithm import Algorithm
from ovquant.api import quantize_with_report
from ovquant.engine import aggregate
from ovquant.errors import PluginError
from ovquant.graph import Graph
from ovquant.pipeline import ChannelTransform, ChannelTransforms
from ovquant.quant_math import fake_quantize, fake_quantize_value, weight_source, weights_of
from ovquant.statistics import Aggregator, Statistic, TensorRef

SCALE = np.array([0.5, 2.0, 1.0, 4.0, 0.25, 1.5, 3.0, 0.8])


def _scale_producer(graph: Graph, scale: np.ndarray) -> None:
    """aca_net's conv1 + bias computes ``y / scale`` per output channel afterwards, and the 1x1 conv2
    reading it compensates (``W2[:, c] * scale_c``): only the tensor between them changes."""
    conv, add = graph.node("conv1"), graph.node("conv1/add")
    w = weight_source(conv)
    graph.set_constant(w, (Graph.constant_value(w) / scale.reshape(-1, 1, 1, 1)).astype(np.float32))
    b = add.input_value(1)
    graph.set_constant(b, (Graph.constant_value(b) / scale.reshape(1, -1, 1, 1)).astype(np.float32))
    w2 = weight_source(graph.node("conv2"))
    graph.set_constant(w2, (Graph.constant_value(w2) * scale.reshape(1, -1, 1, 1)).astype(np.float32))


class ScaleChannels(Algorithm):
    """A third-party algorithm that divides aca_net's conv1/add output by SCALE per channel, through the
    documented contract: announce from ``statistics``, record a ChannelTransform from ``apply``."""

    name = "TestScaleChannels"

    def statistics(self, graph):
        self.context.transforms.announce(TensorRef("conv1/add"), 1)
        return ()

    def apply(self, graph, stats):
        _scale_producer(graph, SCALE)
        self.context.transforms.record(TensorRef("conv1/add"), ChannelTransform(1, np.zeros(8), SCALE))
        return {}


class _Plugin:
    @ovquant.hookimpl
    def register_algorithms(self, register):
        register(ScaleChannels)


@pytest.fixture
def scale_channels():
    name = registry.register_plugin(_Plugin(), name="test_contracts.scale_channels")
    try:
        yield
    finally:
        registry.unregister_plugin(name)


def _activation_ranges(model: ov.Model) -> dict:
    out = {}
    for n in model.get_ordered_ops():
        if n.get_type_name() == "FakeQuantize" and Graph.constant_node(n.input_value(0)) is None:
            consumers = sorted(i.get_node().get_friendly_name() for i in n.output(0).get_target_inputs())
            out[tuple(consumers)] = [Graph.constant_value(n.input_value(i)) for i in range(1, 5)]
    return out


@pytest.mark.parametrize("preset", ["performance", "mixed"])
def test_minmax_derives_ranges_through_a_third_party_channel_transform(scale_channels, preset):
    model = models.aca_net()
    data = models.random_samples(model, 12, seed=3)
    with _no_fail():
        q, report = quantize_with_report(model, data, pipeline=["TestScaleChannels", "MinMaxQuantization"],
                                         preset=preset)
    # reference: the FP32 model changed the same way beforehand, measured directly
    ref_model = model.clone()
    _scale_producer(Graph(ref_model), SCALE)
    with _no_fail():
        ref, _ = quantize_with_report(ref_model, data, pipeline=["MinMaxQuantization"], preset=preset)
    got, want = _activation_ranges(q), _activation_ranges(ref)
    assert got.keys() == want.keys() and ("conv2",) in got
    for k in want:
        for a, b in zip(got[k], want[k]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=str(k))
    # without the record, the range would be the unscaled tensor's: the transform is what made them agree
    lo, hi = got[("conv2",)][:2]
    with _no_fail():
        plain, _ = quantize_with_report(model, data, pipeline=["MinMaxQuantization"], preset=preset)
    assert not np.allclose(_activation_ranges(plain)[("conv2",)][1], hi)


class _no_fail:
    """Quantizing a tiny model warns about nothing that matters here."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def test_channel_transform_apply_is_the_per_channel_affine_map():
    rng = np.random.default_rng(0)
    shift, scale = rng.standard_normal(4), rng.uniform(0.1, 3.0, 4)
    t = ChannelTransform(1, shift, scale)
    v = rng.standard_normal((5, 4))                       # samples x channels
    np.testing.assert_array_equal(t.apply(v, -1), (v - shift[None]) / scale[None])
    w = rng.standard_normal((4, 3, 3))                    # channels x taps
    np.testing.assert_array_equal(t.apply(w, 0), (w - shift[:, None, None]) / scale[:, None, None])
    # min and max stay min and max: the map increases per channel
    x = rng.standard_normal((7, 4))
    np.testing.assert_allclose(t.apply(x, -1).min(axis=0), t.apply(x.min(axis=0), 0))


def test_channel_transforms_hold_for_one_stage_and_saturation_fix_for_the_run():
    ts = ChannelTransforms()
    a, b = TensorRef("a"), TensorRef("b", 1)
    ts.announce(a, 1)
    ts.record(a, ChannelTransform(1, np.zeros(2), np.ones(2), saturation_fix=("conv_a",)))
    assert ts.axis(a) == 1 and ts.axis(b) is None and ts.get(a).saturation_fix == ("conv_a",)
    ts.next_stage()
    assert ts.axis(a) is None and ts.get(a) is None
    ts.record(b, ChannelTransform(0, np.zeros(2), np.ones(2), saturation_fix=("conv_b",)))
    assert ts.saturation_fix_layers() == {"conv_a", "conv_b"}


def test_aggregate_is_the_engine_path():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((9, 3))
    st = Statistic.make(TensorRef("x"), "max", "mean", 1)
    np.testing.assert_allclose(aggregate(st, values), values.mean(axis=0), rtol=1e-6)
    st = Statistic.make(TensorRef("x"), "max", "median", 1)
    np.testing.assert_allclose(aggregate(st, values), np.median(values, axis=0), rtol=1e-6)


class _Broken(Aggregator):
    name = "test_contracts_broken"

    def aggregate(self, x):
        raise RuntimeError("boom")


class _BrokenPlugin:
    @ovquant.hookimpl
    def register_aggregators(self, register):
        register(_Broken)


def test_aggregate_reports_a_failing_aggregator_in_one_line():
    name = registry.register_plugin(_BrokenPlugin(), name="test_contracts.broken")
    try:
        st = Statistic.make(TensorRef("conv1"), "max", "test_contracts_broken", None)
        with pytest.raises(PluginError) as info:
            aggregate(st, np.ones((3, 1)))
        msg = str(info.value)
        assert "test_contracts_broken" in msg and "boom" in msg and "\n" not in msg
    finally:
        registry.unregister_plugin(name)


def test_minmax_keeps_its_requests_from_statistics_to_apply():
    from ovquant.pipeline import Pipeline

    seen = {"requested": [], "looked_up": []}

    class Recording(dict):
        def __getitem__(self, key):
            seen["looked_up"].append(key)
            return super().__getitem__(key)

    class Engine(type(Pipeline([("MinMaxQuantization", {})]).engine)):
        def collect(self, model, statistics, *a, **k):
            seen["requested"].extend(statistics)
            return Recording(super().collect(model, statistics, *a, **k))

    for pipeline in (["MinMaxQuantization"], ["ActivationChannelAlignment", "MinMaxQuantization"]):
        model = models.aca_net()
        pipe = Pipeline([(n, {}) for n in pipeline], engine=Engine())
        with _no_fail():
            pipe.run(model, models.random_samples(model, 6, seed=2))
    assert seen["looked_up"]
    # apply looks up the very objects statistics yielded, not equal rebuilt ones
    assert all(any(k is r for r in seen["requested"]) for k in seen["looked_up"])


def test_fake_quantize_matches_openvino():
    import openvino.opset13 as ops

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 3, 4)) * 2).astype(np.float32)
    il = np.array([-1.0, -0.5, -2.0], np.float32).reshape(1, 3, 1)
    ih = np.array([1.0, 0.7, 1.5], np.float32).reshape(1, 3, 1)
    ol, oh = il * 2, ih * 2
    p = ops.parameter(x.shape, np.float32)
    fq = ops.fake_quantize(p, ops.constant(il), ops.constant(ih), ops.constant(ol), ops.constant(oh), 17)
    compiled = ov.Core().compile_model(ov.Model([fq], [p]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    want = compiled(x)[0]
    got = fake_quantize(x.astype(np.float64), il.astype(np.float64), ih.astype(np.float64), 17,
                        ol.astype(np.float64), oh.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fake_quantize_value(fq, x), want, rtol=1e-5, atol=1e-6)


def test_weights_of_reads_float_and_quantized_weights():
    from ovquant.pipeline import Pipeline

    model = models.conv_net()
    # quantize_with_report folds weight FakeQuantizes; a pipeline run keeps them

    g_model = model.clone()
    with _no_fail():
        Pipeline([("MinMaxQuantization", {})]).run(g_model, models.random_samples(model, 4))
    g = Graph(g_model)
    w, wq = weights_of(g.node("conv2"))
    w0 = Graph.constant_value(Graph(model).node("conv2").input_value(1)).astype(np.float64)
    np.testing.assert_array_equal(w, w0)
    assert wq is not None and wq.shape == w.shape and not np.array_equal(wq, w)
    assert np.max(np.abs(wq - w)) <= np.max(np.abs(w)) / 127 + 1e-6


def test_the_context_holds_only_its_documented_fields():
    """docs/plugins.md lists the Context's fields; algorithms share nothing else (no loose notes such as
    may_transform, need_rescale or a report set), and the docs name each field."""
    import pathlib

    import attrs

    from ovquant.pipeline import Context

    assert [f.name for f in attrs.fields(Context)] == ["target", "engine", "strict", "transforms", "calibration",
                                                   "float_model", "body", "_state"]
    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    for field in ("target", "engine", "strict", "transforms", "calibration", "float_model", "body",
                  "state(key, factory)"):
        assert f"| `{field}` |" in doc, field


def test_no_plugin_calls_a_private_method_of_another_class():
    """Plugins share public functions (ovquant.quant_math, ovquant.engine.aggregate, module functions),
    never another class's private method (as MinMaxQuantization._first_layers once was)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    calls = re.compile(r"\b([A-Z]\w+)\._[a-z]\w*\(")
    found = [(str(p.relative_to(root)), m.group(0)) for top in ("plugins", "examples")
             for p in sorted((root / top).rglob("*.py")) for m in calls.finditer(p.read_text())]
    assert not found, found


@pytest.mark.parametrize("mode,where,what", [
    ("reduce_none", "estimator 'test_bad_est'", "failed in reduce (tensor relu1): TypeError: returned None, expected numbers"),
    ("reduce_str", "estimator 'test_bad_est'", "failed in reduce (tensor relu1): TypeError: returned 'abc', expected numbers"),
    ("apply_list", "algorithm 'TestBadAlgo'", "failed in apply: TypeError: returned list, expected a dict (the report entry)"),
    ("apply_object", "algorithm 'TestBadAlgo'", "failed in apply: TypeError: returned a report entry that is not JSON: object is not JSON serializable"),
    ("stats_str", "algorithm 'TestBadAlgo'", "failed in statistics: TypeError: yielded str 'relu1', expected ovquant.statistics.Statistic"),
])
def test_a_plugin_returning_the_wrong_type_is_one_line_naming_it(mode, where, what):
    """These were tracebacks (ufunc 'isfinite' not supported, 'list' object has no attribute 'setdefault', ...)
    or an error about the output folder."""
    from ovquant.statistics import Estimator

    class Est(Estimator):
        name = "test_bad_est"

        def reduce(self, x, axes):
            return None if mode == "reduce_none" else "abc"

    class Algo(Algorithm):
        name = "TestBadAlgo"

        def statistics(self, graph):
            if mode == "stats_str":
                return ["relu1"]
            if mode.startswith("reduce"):
                return [Statistic.make(TensorRef("relu1"), "test_bad_est", "mean")]
            return []

        def apply(self, graph, stats):
            return [1] if mode == "apply_list" else {"x": object()} if mode == "apply_object" else {}

    class Plugin:
        @ovquant.hookimpl
        def register_estimators(self, register):
            register(Est)

        @ovquant.hookimpl
        def register_algorithms(self, register):
            register(Algo)

    name = registry.register_plugin(Plugin(), name="test_contracts.bad_types")
    try:
        m = models.conv_net()
        with pytest.raises(PluginError) as info:
            quantize_with_report(m, models.random_samples(m, 4), pipeline=["TestBadAlgo"], inplace_statistics=False)
    finally:
        registry.unregister_plugin(name)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(where) and "test_contracts.bad_types" in msg and msg.endswith(what), msg


@pytest.mark.parametrize("mode,what", [
    ("instance", "registered an instance as estimator; register a subclass of ovquant.statistics.Estimator "
                 "(the class, not an instance)"),
    ("not_a_subclass", "as aggregator; register a subclass of ovquant.statistics.Aggregator"),
    ("typo", "unknown hook 'register_estimatorz'"),
])
def test_a_bad_registration_is_refused_when_it_happens_naming_the_plugin(mode, what):
    """These were accepted and failed later, when a config used them ('GoodEst' object is not callable), or,
    for a misspelt hook, never ran at all."""
    from ovquant.statistics import Estimator

    class Est(Estimator):
        name = "test_reg_est"

        def reduce(self, x, axes):
            return x.max(axis=axes)

    class Plugin:
        if mode == "instance":
            @ovquant.hookimpl
            def register_estimators(self, register):
                register(Est())
        elif mode == "not_a_subclass":
            @ovquant.hookimpl
            def register_aggregators(self, register):
                register(Est)
        else:
            @ovquant.hookimpl
            def register_estimatorz(self, register):
                register(Est)

    with pytest.raises(PluginError) as info:
        name = registry.register_plugin(Plugin(), name="test_contracts.bad_registration")
        try:
            registry.get_registry()
        finally:
            registry.unregister_plugin(name)
    msg = str(info.value)
    assert "'test_contracts.bad_registration'" in msg and what in msg and "\n" not in msg, msg
    assert registry.get_plugin_manager().get_plugin("test_contracts.bad_registration") is None
    registry.get_registry()   # the registry is whole again


@pytest.mark.parametrize("mode,what", [("raise", "failed in rule(graph): RuntimeError: rule boom"),
                                       ("list", "failed in rule(graph): TypeError: returned ['relu1'], expected a dict")])
def test_a_placement_rule_that_fails_is_named_not_minmax(mode, what):
    """A third-party placement rule that raised, or gave a list, was reported as MinMaxQuantization failing."""
    def rule(graph):
        if mode == "raise":
            raise RuntimeError("rule boom")
        return ["relu1"]
    rule.name = "test_bad_rule"

    class Plugin:
        @ovquant.hookimpl
        def register_placement_rules(self, register):
            register(rule)

    name = registry.register_plugin(Plugin(), name="test_contracts.bad_rule")
    try:
        m = models.conv_net()
        with pytest.raises(PluginError) as info:
            quantize_with_report(m, models.random_samples(m, 4))
    finally:
        registry.unregister_plugin(name)
    msg = str(info.value)
    assert msg.startswith("placement_rule 'test_bad_rule' (plugin 'test_contracts.bad_rule') ") and what in msg, msg


def test_a_third_party_estimator_that_reads_side_gets_each_side_its_own_value():
    """Estimator.key() left ``side`` out unless ``uses_outlier_prob``: a plugin estimator returning the min
    for side "min" and the max for side "max" got one of the two values for both (a [0, 1.74] range)."""
    from ovquant.engine import Engine
    from ovquant.statistics import Estimator

    class Border(Estimator):
        name = "test_border"

        def reduce(self, x, axes):
            return x.min(axis=axes) if self.side == "min" else x.max(axis=axes)

    class Plugin:
        @ovquant.hookimpl
        def register_estimators(self, register):
            register(Border)

    name = registry.register_plugin(Plugin(), name="test_contracts.border")
    try:
        m = models.conv_net()
        samples = models.random_samples(m, 6)
        lo, hi = (Statistic.make(TensorRef("conv2/add"), "test_border", "min" if side == "min" else "max",
                                 None, {"side": side}) for side in ("min", "max"))
        out = Engine().collect(m, [lo, hi], samples)
    finally:
        registry.unregister_plugin(name)
    acts = models.activations(m, ["conv2/add"], samples)["conv2/add"]
    np.testing.assert_allclose(out[lo], acts.min(), rtol=1e-5)
    np.testing.assert_allclose(out[hi], acts.max(), rtol=1e-5)
