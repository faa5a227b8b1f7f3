"""MinMaxQuantization on small opset-built models: where FakeQuantize ops go (POT/NNCF placement rules),
their ranges against numpy references computed from real FP32 activations, user overrides, ignored
scopes, the compressed INT8 model, and an INT8-vs-FP32 accuracy sanity check.

The FP32 activations come from ``models.activations`` (a plain OpenVINO infer request); the expected
ranges follow /work/shared/reference/pot.md (b), (c), (g)."""
import re

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from ovquant.api import build_pipeline, quantize_with_report
from ovquant.errors import ConfigError, HardwareTargetError
from ovquant.graph import Graph

#: for compiling the reference models
CORE = ov.Core()


def quantize(model, samples, **kw):
    """quantize_with_report (weights compressed to int8)."""
    return quantize_with_report(model, samples, **kw)


def run(model, samples, pipeline=("MinMaxQuantization",), **kw):
    """The pipeline alone: weight FakeQuantizes are kept (no compression)."""
    pipe = build_pipeline(None, pipeline=list(pipeline), **kw)
    return pipe.run(model.clone(), samples)


def minmax_entry(report) -> dict:
    (mm,) = [a for a in report["algorithms"] if a["name"] == "MinMaxQuantization"]
    return mm


def quantizers(report) -> dict:
    return {q["name"]: q for q in minmax_entry(report)["quantizers"]}


def nodes(model) -> dict:
    return {n.get_friendly_name(): n for n in model.get_ordered_ops()}


def fqs(model) -> dict:
    return {n.get_friendly_name(): n for n in model.get_ordered_ops() if n.get_type_name() == "FakeQuantize"}


def src(node, port=0) -> ov.Node:
    return node.input_value(port).get_node()


def consumers(fq) -> set:
    return {(i.get_node().get_friendly_name(), i.get_index()) for i in fq.output(0).get_target_inputs()}


def fq_range(fq) -> tuple:
    lo, hi, olo, ohi = (Graph.constant_value(fq.input_value(i)).astype(np.float64) for i in range(1, 5))
    np.testing.assert_array_equal(lo, olo)
    np.testing.assert_array_equal(hi, ohi)
    return lo, hi


def per_sample(a: np.ndarray, fn) -> np.ndarray:
    """fn over each sample of ``a`` [n, 1, ...] (every axis but the sample axis reduced)."""
    return np.array([fn(x.astype(np.float64).ravel()) for x in a])


def per_channel(a: np.ndarray, fn) -> np.ndarray:
    """[n, C]: fn over each channel of each sample of ``a`` [n, 1, C, ...]."""
    a = a.astype(np.float64).reshape(a.shape[0], a.shape[2], -1)
    return fn(a, axis=2)


def int_weights(model, layer: str) -> np.ndarray:
    """The integer weight constant behind ``layer``'s compressed weights (Multiply <- [Subtract] <- Convert <- Constant)."""
    n = src(nodes(model)[layer], 1)
    assert n.get_type_name() == "Multiply", f"{layer}: weights are not compressed ({n.get_type_name()})"
    n = src(n, 0)
    if n.get_type_name() == "Subtract":
        n = src(n, 0)
    assert n.get_type_name() == "Convert"
    c = src(n, 0)
    assert c.get_type_name() == "Constant" and c.get_output_element_type(0) in (ov.Type.i8, ov.Type.u8)
    return np.array(c.get_data()).astype(np.int64)


# ---- module fixtures: one calibration run per configuration ----------------------------------------
@pytest.fixture(scope="module")
def conv():
    m = models.conv_net()
    samples = models.random_samples(m, 16, seed=1)
    q, report = run(m, samples)
    return m, samples, q, report


@pytest.fixture(scope="module")
def conv_pc(conv):
    """POT's and NNCF's choice: activations per channel where the target allows it (the depthwise input)."""
    m, samples, _, _ = conv
    q, report = run(m, samples, auto_activations_granularity="perchannel")
    return m, samples, q, report


@pytest.fixture(scope="module")
def conv_acts(conv):
    m, samples, _, _ = conv
    acts = models.activations(m, ["relu1", "relu2", "relu3", "gap"], samples)
    acts["image"] = np.stack(samples)
    return acts


@pytest.fixture(scope="module")
def residual():
    m = models.residual_net()
    samples = models.random_samples(m, 8, seed=2)
    q, report = run(m, samples)
    return m, samples, q, report


# ---- placement ---------------------------------------------------------------------------------------
def test_conv_net_activation_placement(conv):
    m, _, q, report = conv
    n, f = nodes(q), fqs(q)
    # the model input, in front of conv1
    fq = src(n["conv1"], 0)
    assert fq.get_type_name() == "FakeQuantize" and src(fq).get_friendly_name() == "image"
    # moved above the MaxPool: on relu1's output; nothing between pool1 and conv2
    fq = src(n["pool1"], 0)
    assert fq.get_type_name() == "FakeQuantize" and src(fq).get_friendly_name() == "relu1"
    assert consumers(fq) == {("pool1", 0)}
    assert src(n["conv2"], 0).get_friendly_name() == "pool1"
    # depthwise conv input: per tensor by default (the target would allow per channel)
    fq = src(n["dwconv"], 0)
    assert fq.get_type_name() == "FakeQuantize" and src(fq).get_friendly_name() == "relu2"
    lo, hi = fq_range(fq)
    assert np.asarray(lo).size == np.asarray(hi).size == 1
    # ReduceMean input and FC input
    for layer, producer in (("gap", "relu3"), ("fc", "gap")):
        fq = src(n[layer], 0)
        assert fq.get_type_name() == "FakeQuantize" and src(fq).get_friendly_name() == producer, layer
        assert np.asarray(fq_range(fq)[0]).size == 1   # per tensor
    acts = [x for x in f.values() if src(x).get_type_name() != "Constant"]
    assert len(acts) == 5
    assert minmax_entry(report)["n_fake_quantize"] == len(f) == 9


def test_auto_perchannel_quantizes_the_depthwise_input_per_channel_only(conv_pc):
    _, _, q, report = conv_pc
    n = nodes(q)
    lo, hi = fq_range(src(n["dwconv"], 0))
    assert lo.shape == hi.shape == (1, 16, 1, 1)
    for layer in ("conv1", "gap", "fc"):   # the target allows only per tensor there
        assert np.asarray(fq_range(src(n[layer], 0))[0]).size == 1, layer
    assert quantizers(report)["relu2/fq_output_0"]["granularity"] == "perchannel"


def test_conv_net_weight_placement(conv):
    _, _, q, report = conv
    n = nodes(q)
    for layer in ("conv1", "conv2", "dwconv", "fc"):
        fq = src(n[layer], 1)
        assert fq.get_type_name() == "FakeQuantize", layer
        assert src(fq).get_type_name() == "Constant", layer
        assert int(fq.get_attributes()["levels"]) == 255, layer
        assert fq.get_friendly_name() == f"{layer}/fq_weights_1"
        e = quantizers(report)[f"{layer}/fq_weights_1"]
        assert e["kind"] == "weights" and e["levels"] == 255 and e["granularity"] == "perchannel"


def test_no_fake_quantize_in_front_of_bias_adds(conv):
    _, _, q, _ = conv
    adds = [x for x in q.get_ordered_ops() if x.get_type_name() == "Add"]
    assert len(adds) == 4
    for add in adds:
        for p in range(2):
            assert src(add, p).get_type_name() != "FakeQuantize", add.get_friendly_name()


def test_ranges_after_relu_are_unsigned(conv):
    _, _, q, report = conv
    for name, fq in fqs(q).items():
        if src(fq).get_type_name() == "Relu" or src(fq).get_friendly_name() == "gap":
            lo, hi = fq_range(fq)
            assert np.all(lo == 0.0), name
            assert np.all(hi > 0), name
            assert quantizers(report)[name]["range"][0] == 0.0


def test_residual_net_shared_quantizer_and_add_inputs(residual):
    _, _, q, report = residual
    n = nodes(q)
    relu1_fqs = [i.get_node() for i in n["relu1"].output(0).get_target_inputs()]
    assert len(relu1_fqs) == 1 and relu1_fqs[0].get_type_name() == "FakeQuantize"
    assert consumers(relu1_fqs[0]) == {("conv2", 0), ("residual_add", 0)}
    assert set(quantizers(report)["relu1/fq_output_0"]["consumers"]) == {"conv2:0", "residual_add:0"}
    # the residual Add: both inputs quantized; the second one on conv2's biased output
    a, b = src(n["residual_add"], 0), src(n["residual_add"], 1)
    assert a.get_type_name() == b.get_type_name() == "FakeQuantize"
    assert src(b).get_friendly_name() == "conv2/add"


def test_residual_net_concat_inputs_share_one_scale(residual):
    _, _, q, report = residual
    n = nodes(q)
    a, b = src(n["concat"], 0), src(n["concat"], 1)
    assert a.get_type_name() == b.get_type_name() == "FakeQuantize"
    assert (src(a).get_friendly_name(), src(b).get_friendly_name()) == ("relu2", "sigmoid")
    ra, rb = fq_range(a), fq_range(b)
    np.testing.assert_array_equal(ra[0], rb[0])
    np.testing.assert_array_equal(ra[1], rb[1])
    assert src(n["conv4"], 0).get_friendly_name() == "concat"   # nothing after the Concat
    qs = quantizers(report)
    assert qs["relu2/fq_output_0"]["unified_scale_group"] == qs["sigmoid/fq_output_0"]["unified_scale_group"]


def test_residual_net_first_convolutions_get_the_saturation_fix(residual):
    _, _, _, report = residual
    qs = quantizers(report)
    fixed = {q["tensor"].split(":")[0] for q in qs.values() if q["kind"] == "weights" and q["saturation_fix"]}
    assert fixed == {"conv1", "conv3"}   # both convolutions fed by the model input


@pytest.mark.parametrize("cap,env,want", [
    ("AVX2", None, "measured"),                  # no VNNI: every layer's pair sums can saturate at int16
    ("AVX512_CORE", None, "measured"),           # AVX-512 before VNNI: the same vpmaddubsw path
    ("AVX2", "first_layer", "first_layer"),      # $OVQUANT_SATURATION_FIX fixes what "auto" resolves to
])
def test_auto_saturation_fix_follows_the_host_isa(residual, monkeypatch, cap, env, want):
    """saturation_fix "auto" (the default): "first_layer" where oneDNN runs int8 with VNNI or AMX, "measured"
    where it cannot (ONEDNN_MAX_CPU_ISA below VNNI stands for such a host); the entry says which and why."""
    m, samples, _, _ = residual
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    if env is None:
        monkeypatch.delenv("OVQUANT_SATURATION_FIX", raising=False)
    else:
        monkeypatch.setenv("OVQUANT_SATURATION_FIX", env)
    _, report = run(m, samples)
    e = minmax_entry(report)["saturation_fix"]
    fixed = {q["tensor"].split(":")[0] for q in quantizers(report).values()
             if q["kind"] == "weights" and q["saturation_fix"]}
    weighted = {q["tensor"].split(":")[0] for q in quantizers(report).values() if q["kind"] == "weights"}
    assert e["mode"] == want and e["layers"] == len(fixed)
    assert fixed == {"conv1", "conv3"} if want == "first_layer" else fixed <= weighted
    assert len(weighted) > 2
    assert ("OVQUANT_SATURATION_FIX" in e["why"]) == (env is not None) and e["why"].startswith("auto")
    notice = minmax_entry(report).get("notice", "")   # printed by the CLI where "auto" is not POT's choice
    assert (f"weights widened where int16 pair sums could overflow, in {len(fixed)} layers" in notice) == (want == "measured")


def test_auto_saturation_fix_with_vnni_is_first_layer(residual, monkeypatch):
    from ovquant.hwtarget import native_int8

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("OVQUANT_SATURATION_FIX", raising=False)
    if not native_int8():
        pytest.skip("this host's CPU has no VNNI or AMX")
    m, samples, _, _ = residual
    _, report = run(m, samples)
    e = minmax_entry(report)["saturation_fix"]
    assert e["mode"] == "first_layer" and native_int8() in e["why"] and e["layers"] == 2


def test_saturation_fix_environment_value_is_checked(residual, monkeypatch):
    m, samples, _, _ = residual
    monkeypatch.setenv("OVQUANT_SATURATION_FIX", "some")
    with pytest.raises(ConfigError, match="OVQUANT_SATURATION_FIX='some': expected one of first_layer, all, measured, no"):
        run(m, samples)
    monkeypatch.setenv("OVQUANT_SATURATION_FIX", "all")
    _, report = run(m, samples, saturation_fix="first_layer")   # the config's value wins
    assert minmax_entry(report)["saturation_fix"] == {"mode": "first_layer", "why": "set in the config", "layers": 2}


def test_matmul_net_placement():
    m = models.matmul_net()
    q, report = run(m, models.random_samples(m, 8, seed=3))
    n = nodes(q)
    for layer in ("q", "k"):
        fq = src(n[layer], 1)
        assert fq.get_type_name() == "FakeQuantize" and src(fq).get_type_name() == "Constant", layer
    for layer, producers in (("qk", ("q/add", "k/add")),):
        for port, producer in enumerate(producers):
            fq = src(n[layer], port)
            assert fq.get_type_name() == "FakeQuantize", (layer, port)
            assert src(fq).get_friendly_name() == producer, (layer, port)
    # the attention output (Softmax times values) stays in float, as NNCF's ignored pattern keeps it
    # (plugins/algorithms/fragile_ops.py); x keeps one quantizer, for q and k
    assert src(n["av"], 0).get_type_name() == "Softmax" and src(n["av"], 1).get_type_name() == "Parameter"
    assert consumers(src(n["q"], 0)) == {("q", 0), ("k", 0)}
    assert minmax_entry(report)["protected"] == {"av": "attention_output"}
    assert len(fqs(q)) == 5


def test_int_input_net_integer_tensors_are_never_quantized():
    m = models.int_input_net()
    q, report = run(m, models.random_samples(m, 6, seed=4))
    f = fqs(q)
    # the embedding output and the weights (the embedding table may count as weights, as in NNCF)
    assert {"embedding/fq_output_0", "proj/fq_weights_1"} <= set(f) <= \
        {"embedding/fq_output_0", "proj/fq_weights_1", "embedding/fq_weights_0"}
    for fq in f.values():
        assert fq.get_input_element_type(0) == ov.Type.f32
    n = nodes(q)
    assert src(n["embedding"], 1).get_friendly_name() == "input_ids"       # Gather indices untouched
    assert src(n["embedding"], 2).get_type_name() == "Constant"
    table = src(n["embedding"], 0)
    if table.get_type_name() == "FakeQuantize":
        assert src(table).get_type_name() == "Constant"
    else:
        assert table.get_type_name() == "Constant"
    assert src(src(n["proj"], 0)).get_friendly_name() == "embedding"
    for e in minmax_entry(report)["quantizers"]:
        assert not e["tensor"].startswith("input_ids")


def test_matmul_weight_channels_follow_transpose_b():
    m = models.fc_net()
    q, report = run(m, models.random_samples(m, 6, seed=7))
    f = fqs(q)
    for layer, axis in (("fc1", 1), ("fc2", 0)):       # fc1: W [in, out]; fc2: W [out, in]
        fq = f[f"{layer}/fq_weights_1"]
        w = Graph.constant_value(fq.input_value(0)).astype(np.float64)
        lo, hi = fq_range(fq)
        want = np.abs(w).max(axis=1 - axis, keepdims=True)
        assert hi.shape == want.shape, layer
        np.testing.assert_allclose(hi, want, rtol=1e-6, err_msg=layer)
        assert quantizers(report)[f"{layer}/fq_weights_1"]["channels"] == w.shape[axis]
    # the input quantizer is shared by nothing else; relu1 feeds fc2 unsigned
    assert fq_range(f["relu1/fq_output_0"])[0] == 0.0
    assert not any(e["saturation_fix"] for e in quantizers(report).values() if e["kind"] == "weights")


def test_matmul_constant_first_input_is_quantized_per_tensor_and_runs():
    """``y = relu(W0 @ x) @ W1``: W0's rows are the output's axis -2, and the CPU plugin rejects a per-row
    scale there once the weights are int8 (``any_of(scale.size(), OC, 1U)``); W0 gets one scale (its
    absolute max), W1 one per output column, and the returned model compiles and runs close to FP32."""
    from openvino import opset13 as ops

    rng = np.random.default_rng(3)
    x = ops.parameter([1, 64, 8], np.float32, name="x")
    w0 = rng.standard_normal((32, 64)).astype(np.float32)
    h = ops.relu(ops.matmul(ops.constant(w0), x, False, False, name="mm0"), name="h")
    y = ops.matmul(h, ops.constant(rng.standard_normal((8, 4)).astype(np.float32)), False, False, name="mm1")
    m = ov.Model([y], [x], "w_first")
    samples = [rng.standard_normal((1, 64, 8)).astype(np.float32) for _ in range(20)]
    f, report = run(m, samples)
    lo, hi = fq_range(fqs(f)["mm0/fq_weights_0"])
    assert hi.size == 1 and float(hi.ravel()[0]) == pytest.approx(np.abs(w0).max(), rel=1e-6)
    assert quantizers(report)["mm0/fq_weights_0"]["granularity"] == "pertensor"
    assert fq_range(fqs(f)["mm1/fq_weights_1"])[1].shape == (1, 4)
    q, _ = quantize(m, samples, skip_slow_int8=False)
    assert any(n.get_element_type() == ov.Type.i8 for n in q.get_ordered_ops() if n.get_type_name() == "Constant")
    got = CORE.compile_model(q, "CPU")(samples[0])[0]
    want = CORE.compile_model(m, "CPU")(samples[0])[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.2


@pytest.mark.parametrize("tb", [True, False])
def test_batched_matmul_weights_get_one_scale_per_batch_and_column(tb):
    """x [1, 4, 8, 16] @ W [4, ., .]: a column scale shared across W's batch ([1, 12, 1]) made the CPU plugin's
    int8 batched MatMul read garbage (relative L2 1e20 and more, or NaN); one per batch and column runs."""
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((4, 12, 16) if tb else (4, 16, 12)) * 0.3).astype(np.float32)
    x = ops.parameter([1, 4, 8, 16], np.float32, name="x")
    m = ov.Model([ops.matmul(x, ops.constant(w), False, tb, name="bmm")], [x], "batched")
    samples = [rng.standard_normal((1, 4, 8, 16)).astype(np.float32) for _ in range(20)]
    f, report = run(m, samples)
    lo, hi = fq_range(fqs(f)["bmm/fq_weights_1"])
    want = np.abs(w).max(axis=2 if tb else 1, keepdims=True)
    assert hi.shape == want.shape == ((4, 12, 1) if tb else (4, 1, 12))
    np.testing.assert_allclose(hi, want, rtol=1e-6)
    q, _ = quantize(m, samples, skip_slow_int8=False)
    cq, cf = CORE.compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), CORE.compile_model(m, "CPU")
    for s in samples[:8]:
        got, want_y = cq(s)[0], cf(s)[0]
        assert np.isfinite(got).all() and np.linalg.norm(got - want_y) / np.linalg.norm(want_y) < 0.2


def test_quantizers_do_not_move_through_ignored_agnostic_ops(conv):
    m, samples, _, _ = conv
    q, report = run(m, samples, ignored={"scope": ["pool1"]})
    n = nodes(q)
    fq = src(n["conv2"], 0)
    assert fq.get_type_name() == "FakeQuantize" and src(fq).get_friendly_name() == "pool1"
    assert src(n["pool1"], 0).get_friendly_name() == "relu1"
    assert "relu1/fq_output_0" not in quantizers(report)


@pytest.mark.parametrize("mode,fixed", [("all", {"conv1", "conv2", "dwconv", "fc"}), ("no", set()),
                                        ("first_layer", {"conv1"})])
def test_saturation_fix_modes(conv, mode, fixed):
    m, samples, _, _ = conv
    _, report = run(m, samples, saturation_fix=mode)
    got = {e["tensor"].split(":")[0] for e in quantizers(report).values() if e["kind"] == "weights" and e["saturation_fix"]}
    assert got == fixed


def test_measured_saturation_fix_spares_depthwise_layers(conv):
    """"measured": a depthwise convolution has no input-channel pairs, so it keeps the 8-bit grid; a layer that
    gets the fix says how many of its output channels were widened."""
    m, samples, _, _ = conv
    _, report = run(m, samples, saturation_fix="measured")
    w = {e["tensor"].split(":")[0]: e for e in quantizers(report).values() if e["kind"] == "weights"}
    assert not w["dwconv"]["saturation_fix"] and "saturation_fix_channels" not in w["dwconv"]
    for e in w.values():
        if e["saturation_fix"]:
            assert 1 <= e["saturation_fix_channels"] <= e.get("channels", 1), e
    assert minmax_entry(report)["saturation_fix"]["layers"] == sum(e["saturation_fix"] for e in w.values())


# ---- ignored scope ----------------------------------------------------------------------------------
def test_ignored_scope_name_keeps_that_layer_float(conv):
    m, samples, _, full = conv
    q, report = quantize(m, samples, ignored={"scope": ["conv2"]})
    names = set(quantizers(report))
    # conv2's weights and its only input quantizer (on relu1, above the MaxPool) are gone, nothing else
    assert names == set(quantizers(full)) - {"conv2/fq_weights_1", "relu1/fq_output_0"}
    n = nodes(q)
    w = src(n["conv2"], 1)
    assert w.get_type_name() == "Constant" and w.get_output_element_type(0) == ov.Type.f32
    for layer in ("conv1", "dwconv", "fc"):
        int_weights(q, layer)
    assert "conv2" in minmax_entry(report)["ignored"]


def test_ignored_scope_regex_matches_whole_names(conv):
    m, samples, _, full = conv
    _, report = run(m, samples, ignored={"scope": ["dw.*"]})
    ign = set(minmax_entry(report)["ignored"])
    assert {"dwconv", "dwconv/add", "dwconv/weights", "dwconv/bias"} <= ign
    assert not any(x.startswith("conv") for x in ign)
    assert set(quantizers(report)) == set(quantizers(full)) - {"dwconv/fq_weights_1", "relu2/fq_output_0"}
    # a regex matches the whole name, not a part of it
    with pytest.warns(UserWarning, match=re.escape("ignored.scope[0] 'dw'")):
        _, report = run(m, samples, ignored={"scope": ["dw"]})
    assert set(quantizers(report)) == set(quantizers(full))


def test_ignored_operation_type_removes_residual_add_quantizers(residual):
    m, samples, _, full = residual
    q, report = run(m, samples, ignored={"operations": [{"type": "Add"}]})
    n = nodes(q)
    for p in range(2):
        assert src(n["residual_add"], p).get_type_name() != "FakeQuantize"
    qs = quantizers(report)
    assert "conv2/add/fq_output_0" not in qs
    assert qs["relu1/fq_output_0"]["consumers"] == ["conv2:0"]
    assert not any(c.startswith("residual_add") for e in qs.values() for c in e["consumers"])
    assert set(qs) == set(quantizers(full)) - {"conv2/add/fq_output_0"}


def test_ignored_skip_model_quantizes_nothing(conv):
    m, samples, _, _ = conv
    with pytest.warns(UserWarning):       # nothing to quantize is reported
        q, report = quantize(m, samples, ignored={"skip_model": True})
    assert fqs(q) == {}
    assert minmax_entry(report)["n_fake_quantize"] == 0
    for layer in ("conv1", "conv2", "dwconv", "fc"):
        w = src(nodes(q)[layer], 1)
        assert w.get_type_name() == "Constant" and w.get_output_element_type(0) == ov.Type.f32


def test_unmatched_ignored_entry_warns_and_strict_raises(conv):
    m, samples, _, _ = conv
    with pytest.warns(UserWarning, match=re.escape("ignored.scope[1] 'no_such_node'")):
        run(m, samples, ignored={"scope": ["conv2", "no_such_node"]})
    with pytest.raises(ConfigError, match=re.escape("ignored.scope[0] 'no_such_node'")):
        quantize(m, samples, ignored={"scope": ["no_such_node"]}, strict=True)
    with pytest.raises(ConfigError, match=r"ignored\.operations\[0\] type 'Convolution'.*strides"):
        quantize(m, samples, ignored={"operations": [{"type": "Convolution", "attributes": {"strides": [2, 2]}}]},
                 strict=True)


def test_ignored_operations_with_attribute_filters(conv):
    m, samples, _, _ = conv
    _, report = run(m, samples, ignored={"operations": [{"type": "Convolution", "attributes": {"strides": [1, 1]}}]})
    ign = set(minmax_entry(report)["ignored"])
    assert {"conv1", "conv2"} <= ign and "dwconv" not in ign     # dwconv is a GroupConvolution
    weights = {e["tensor"] for e in quantizers(report).values() if e["kind"] == "weights"}
    assert weights == {"dwconv:1", "fc:1"}

    s = models.strided_net()
    samples = models.random_samples(s, 4, seed=5)
    _, report = run(s, samples, ignored={"operations": [{"type": "Convolution", "attributes": {"dilations": [2, 2]}}]})
    assert "dilconv" in minmax_entry(report)["ignored"] and "conv1" not in minmax_entry(report)["ignored"]
    weights = {e["tensor"] for e in quantizers(report).values() if e["kind"] == "weights"}
    assert weights == {"conv1:1", "dwconv:1", "fc:1"}
    _, report = run(s, samples, ignored={"operations": [{"type": "GroupConvolution", "attributes": {"strides": "2, 2"}}]})
    assert "dwconv" in minmax_entry(report)["ignored"]
    assert "dwconv/fq_weights_1" not in quantizers(report)


# ---- ranges against numpy ------------------------------------------------------------------------------
def test_performance_symmetric_ranges_match_numpy(conv, conv_pc, conv_acts):
    _, _, q, _ = conv
    f = fqs(q)
    # unsigned per tensor: [0, mean over samples of the per-sample max |x|]
    for t in ("relu1", "relu2", "relu3", "gap"):
        lo, hi = fq_range(f[f"{t}/fq_output_0"])
        want = per_sample(conv_acts[t], lambda v: np.abs(v).max()).mean()
        np.testing.assert_allclose(hi, want, rtol=1e-5, err_msg=t)
        assert lo == 0.0
    # signed per tensor: high as above, low = -high * 128 / 127 (levels 256)
    fq = f["image/fq_output_0"]
    lo, hi = fq_range(fq)
    assert int(fq.get_attributes()["levels"]) == 256
    np.testing.assert_allclose(hi, per_sample(conv_acts["image"], lambda v: np.abs(v).max()).mean(), rtol=1e-5)
    np.testing.assert_allclose(lo, -hi * 128 / 127, rtol=1e-6)
    # per channel (depthwise input): max over samples of each channel's max, floored at 1 % of the largest
    lo, hi = fq_range(fqs(conv_pc[2])["relu2/fq_output_0"])
    want = per_channel(conv_acts["relu2"], np.max).max(axis=0)
    want = np.maximum(want, 0.01 * want.max())
    np.testing.assert_allclose(hi.ravel(), want, rtol=1e-5)
    assert np.all(lo == 0.0)


def _zero_on_grid(lo, hi, mn, mx, levels=256, name=""):
    """0 exactly on the grid (an integer zero point), one border kept as estimated, the other moved a
    little (by a step or so)."""
    lo, hi = np.asarray(lo, np.float64).ravel(), np.asarray(hi, np.float64).ravel()
    mn, mx = np.minimum(mn, 0.0).ravel(), np.maximum(mx, 0.0).ravel()
    zp = -lo * (levels - 1) / (hi - lo)
    np.testing.assert_allclose(zp, np.round(zp), atol=1e-4, err_msg=name)
    assert np.all((zp >= 0) & (zp <= levels - 1)), name
    kept_lo = np.isclose(lo, mn, rtol=1e-5, atol=1e-7)
    kept_hi = np.isclose(hi, mx, rtol=1e-5, atol=1e-7)
    assert (kept_lo | kept_hi).all(), name
    assert np.all(np.abs(lo - mn) + np.abs(hi - mx) < 0.02 * (mx - mn)), name   # a step or two


def _covers(lo, hi, mn, mx, name=""):
    """The range includes [min(mn, 0), max(mx, 0)]: borders only move outward (POT's tune_range)."""
    lo, hi = np.asarray(lo, np.float64).ravel(), np.asarray(hi, np.float64).ravel()
    mn, mx = np.minimum(mn, 0.0).ravel(), np.maximum(mx, 0.0).ravel()
    assert np.all(lo <= mn + 1e-6 * np.abs(mn)), (name, lo, mn)
    assert np.all(hi >= mx - 1e-6 * np.abs(mx)), (name, hi, mx)


@pytest.fixture(scope="module")
def mixed(conv, conv_acts):
    m, samples, _, _ = conv
    q, report = run(m, samples, preset="mixed", auto_activations_granularity="perchannel")
    f = fqs(q)
    cases = {}
    for t in ("image", "relu1", "relu3", "gap"):    # asymmetric per tensor: min/mean, max/mean
        cases[t] = (f[f"{t}/fq_output_0"], per_sample(conv_acts[t], np.min).mean(),
                    per_sample(conv_acts[t], np.max).mean())
    # per channel: min/min and max/max
    cases["relu2"] = (f["relu2/fq_output_0"], per_channel(conv_acts["relu2"], np.min).min(axis=0),
                      per_channel(conv_acts["relu2"], np.max).max(axis=0))
    return q, report, cases


def test_mixed_preset_asymmetric_ranges_match_numpy(mixed):
    q, report, cases = mixed
    for t, (fq, mn, mx) in cases.items():
        assert int(fq.get_attributes()["levels"]) == 256
        lo, hi = fq_range(fq)
        _zero_on_grid(lo, hi, mn, mx, name=t)
        assert "asymmetric" in quantizers(report)[f"{t}/fq_output_0"]["scheme"]
    lo, hi = fq_range(cases["image"][0])
    assert lo < 0 < hi and not np.isclose(-lo, hi * 128 / 127, rtol=1e-3)   # not the symmetric grid
    for t in ("relu1", "relu3", "gap"):      # unsigned data: [0, mean max] is already on the grid
        lo, hi = fq_range(cases[t][0])
        assert lo == 0.0
        np.testing.assert_allclose(hi, cases[t][2], rtol=1e-5)
    # weights stay symmetric in mixed
    assert int(fqs(q)["conv2/fq_weights_1"].get_attributes()["levels"]) == 256 - 1


def test_mixed_preset_asymmetric_ranges_cover_the_estimates(mixed):
    _, _, cases = mixed
    for t, (fq, mn, mx) in cases.items():
        lo, hi = fq_range(fq)
        _covers(lo, hi, mn, mx, name=t)


def test_tune_range_only_moves_borders_outward():
    from ovquant.plugins.algorithms.minmax import asymmetric_range
    rng = np.random.default_rng(0)
    mn, mx = -rng.uniform(0.1, 3, 200), rng.uniform(0.1, 3, 200)
    lo, hi = asymmetric_range(mn, mx, 256)
    zp = -lo * 255 / (hi - lo)
    np.testing.assert_allclose(zp, np.round(zp), atol=1e-6)
    _covers(lo, hi, mn, mx)


def _weight_abs_max(w: np.ndarray, layer: str) -> np.ndarray:
    axes = {"conv1": (1, 2, 3), "conv2": (1, 2, 3), "dwconv": (2, 3, 4), "fc": (1,)}[layer]
    return np.abs(w.astype(np.float64)).max(axis=axes, keepdims=True)


def test_weight_ranges_per_output_channel(conv):
    _, _, q, report = conv
    f = fqs(q)
    for layer in ("conv1", "conv2", "dwconv", "fc"):
        fq = f[f"{layer}/fq_weights_1"]
        w = Graph.constant_value(fq.input_value(0))
        lo, hi = fq_range(fq)
        want = _weight_abs_max(w, layer)
        if layer == "conv1":       # the saturation fix: a 7-bit grid inside the 8-bit levels
            want = want * 254 / 126
        assert hi.shape == want.shape, layer
        np.testing.assert_allclose(hi, want, rtol=1e-6, err_msg=layer)
        np.testing.assert_array_equal(lo, -hi)
        assert quantizers(report)[f"{layer}/fq_weights_1"]["saturation_fix"] == (layer == "conv1")


@pytest.fixture(scope="module")
def compressed(conv):
    m, samples, _, _ = conv
    return quantize(m, samples)


def test_compressed_weights_use_the_saturation_fix_grid_on_the_first_conv(compressed):
    q, _ = compressed
    c1 = int_weights(q, "conv1")
    assert np.abs(c1).max() <= 64
    assert np.abs(c1).max() >= 60          # the 7-bit grid is used, not some tiny range
    for layer in ("conv2", "dwconv", "fc"):
        wi = int_weights(q, layer)
        per_out = np.abs(wi.reshape(wi.shape[0], -1)).max(axis=1)
        assert per_out.max() == 127, layer
        assert np.all(per_out == 127), layer   # per output channel: each channel's max maps to 127


def test_gpu_target_has_no_saturation_fix(conv):
    m, samples, _, _ = conv
    q, report = quantize(m, samples, target_device="GPU")
    assert report["target_device"] == "GPU"
    assert not any(e.get("saturation_fix") for e in minmax_entry(report)["quantizers"])
    assert np.abs(int_weights(q, "conv1")).max() == 127


def test_every_weight_is_an_int8_constant_followed_by_convert(compressed):
    q, _ = compressed
    for layer in ("conv1", "conv2", "dwconv", "fc"):
        int_weights(q, layer)
    for fq in fqs(q).values():      # only activation FakeQuantizes are left
        assert src(fq).get_type_name() not in ("Constant", "Convert")


# ---- overrides ----------------------------------------------------------------------------------------
def test_activation_override_symmetric_pertensor(conv):
    m, samples, _, _ = conv
    q, report = run(m, samples, activations={"bits": 8, "mode": "symmetric", "granularity": "pertensor"})
    acts = [e for e in minmax_entry(report)["quantizers"] if e["kind"] == "activations"]
    assert len(acts) == 5
    for e in acts:
        assert e["granularity"] == "pertensor" and "symmetric" in e["scheme"] and e["levels"] == 256, e
    lo, hi = fq_range(fqs(q)["relu2/fq_output_0"])
    assert lo.size == hi.size == 1       # the depthwise input too: per tensor fits the per-channel scheme


def test_perchannel_activations_on_a_convolution_input_are_refused(conv):
    m, samples, _, _ = conv
    with pytest.raises(HardwareTargetError) as exc:
        quantize(m, samples, activations={"granularity": "perchannel"})
    msg = str(exc.value)
    assert "'conv1'" in msg and "perchannel" in msg
    assert "allowed" in msg and "pertensor" in msg


def test_asymmetric_weight_override(conv):
    m, samples, _, _ = conv
    q, report = run(m, samples, weights={"mode": "asymmetric"})
    f = fqs(q)
    for layer in ("conv2", "dwconv", "fc"):
        fq = f[f"{layer}/fq_weights_1"]
        assert int(fq.get_attributes()["levels"]) == 256
        lo, hi = fq_range(fq)
        w = Graph.constant_value(fq.input_value(0)).astype(np.float64)
        axes = {"conv2": (1, 2, 3), "dwconv": (2, 3, 4), "fc": (1,)}[layer]
        _zero_on_grid(lo, hi, w.min(axis=axes, keepdims=True), w.max(axis=axes, keepdims=True), name=layer)
        assert not np.allclose(lo, -hi), layer
        assert "asymmetric" in quantizers(report)[f"{layer}/fq_weights_1"]["scheme"]
    # activations keep the performance preset's symmetric scheme
    assert "symmetric" == quantizers(report)["image/fq_output_0"]["scheme"].split()[1]


def test_accuracy_preset_gives_asymmetric_weights_and_activations(conv):
    m, samples, _, _ = conv
    _, report = run(m, samples, preset="accuracy", target_device="NPU")
    for e in minmax_entry(report)["quantizers"]:
        assert "asymmetric" in e["scheme"], e
        assert e["levels"] == 256
    # on CPU (and GPU, ANY) POT runs accuracy as mixed: symmetric weights, asymmetric activations
    _, report = run(m, samples, preset="accuracy", target_device="CPU")
    for e in minmax_entry(report)["quantizers"]:
        assert ("asymmetric" in e["scheme"]) == (e["kind"] == "activations"), e
    q, _ = quantize(m, samples, preset="accuracy", weights={"mode": "asymmetric"})
    for layer in ("conv1", "conv2", "dwconv", "fc"):
        int_weights(q, layer)


# ---- saved model and accuracy ----------------------------------------------------------------------------
def test_saved_int8_model_is_much_smaller(tmp_path):
    m = models.big_conv_net()
    q, _ = quantize(m, models.random_samples(m, 4, seed=6))
    ov.save_model(m, str(tmp_path / "fp32.xml"), compress_to_fp16=False)
    ov.save_model(q, str(tmp_path / "int8.xml"), compress_to_fp16=False)
    fp32 = (tmp_path / "fp32.bin").stat().st_size
    int8 = (tmp_path / "int8.bin").stat().st_size
    assert fp32 > 800_000
    assert int8 <= 0.3 * fp32, (int8, fp32)
    # the saved INT8 model loads and keeps int8 weights
    r = ov.Core().read_model(str(tmp_path / "int8.xml"))
    for layer in ("conv1", "conv2", "conv3", "fc"):
        int_weights(r, layer)


def _outputs(model, samples) -> np.ndarray:
    c = CORE.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = c.create_infer_request()
    return np.stack([np.array(req.infer(s)[0], np.float64) for s in samples])


@pytest.mark.parametrize("builder,bound", [("conv_net", 0.1), ("residual_net", 0.1), ("strided_net", 0.15)])
def test_int8_outputs_close_to_fp32_on_held_out_samples(builder, bound):
    m = getattr(models, builder)()
    q, _ = quantize(m, models.random_samples(m, 16, seed=1))
    held_out = models.random_samples(m, 16, seed=123)
    a, b = _outputs(m, held_out), _outputs(q, held_out)
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert rel < bound, rel
    assert rel > 0        # it is really quantized
