"""ActivationChannelAlignment on ``models.aca_net`` (conv 3x3 + bias -> conv 1x1 + bias, with output
channels of very different ranges), against numpy: POT's math (/work/shared/reference/pot.md (j)), the
FP32 function kept, and the statistics MinMax and FastBiasCorrection derive for the aligned tensor in
the same pass equal to what numpy computes on the aligned FP32 activations."""
import numpy as np
import openvino as ov
import pytest

import models
from ovquant.api import build_pipeline, quantize_with_report
from ovquant.graph import Graph
from ovquant.quant_math import fake_quantize_value

#: for compiling the reference models
CORE = ov.Core()
Q = 1e-4   # POT's ACA quantile


def run(model, samples, pipeline=("DefaultQuantization",), **kw):
    pipe = build_pipeline(None, pipeline=list(pipeline), **kw)
    return pipe.run(model.clone(), samples)


def entry(report, name) -> dict:
    (e,) = [a for a in report["algorithms"] if a["name"] == name]
    return e


def nodes(model) -> dict:
    return {n.get_friendly_name(): n for n in model.get_ordered_ops()}


def const(model, layer, port=1) -> np.ndarray:
    """The float constant on ``port`` of ``layer`` (behind a weight FakeQuantize if there is one)."""
    out = nodes(model)[layer].input_value(port)
    if out.get_node().get_type_name() == "FakeQuantize":
        out = out.get_node().input_value(0)
    return Graph.constant_value(out).astype(np.float64)


def outputs(model, samples) -> np.ndarray:
    c = CORE.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    r = c.create_infer_request()
    return np.stack([np.array(r.infer(s)[0], np.float64) for s in samples])


def channel_ranges(y: np.ndarray) -> tuple:
    """POT's ACA statistics of y [n, 1, C, H, W]: per channel, the median over samples of the per-sample
    quantiles 1e-4 and 1 - 1e-4 (linear interpolation)."""
    v = y.astype(np.float64).reshape(y.shape[0], y.shape[2], -1)
    lo = np.median(np.quantile(v, Q, axis=2), axis=0)
    hi = np.median(np.quantile(v, 1 - Q, axis=2), axis=0)
    return lo, hi


def spread(y: np.ndarray) -> float:
    lo, hi = channel_ranges(y)
    r = hi - lo
    return float(r.max() / r.min())


@pytest.fixture(scope="module")
def net():
    m = models.aca_net()
    samples = models.random_samples(m, 16, seed=21)
    fp32 = models.activations(m, ["conv1/add", "conv2/add"], samples)
    a, report = run(m, samples, pipeline=("ActivationChannelAlignment",))
    aligned = models.activations(a, ["conv1/add", "conv2/add"], samples)
    return m, samples, fp32, a, report, aligned


# ---- ACA alone -------------------------------------------------------------------------------------------
def test_alignment_keeps_the_fp32_function(net):
    m, samples, fp32, a, report, aligned = net
    e = entry(report, "ActivationChannelAlignment")
    assert e["n_pairs"] == 1
    (pair,) = e["pairs"]
    assert (pair["producer"], pair["consumer"], pair["mean_aligned"]) == ("conv1", "conv2", True)
    assert "FakeQuantize" not in {n.get_type_name() for n in a.get_ordered_ops()}
    # the consumer's output and the model outputs are unchanged (fresh samples too)
    ref, got = fp32["conv2/add"], aligned["conv2/add"]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    held = models.random_samples(m, 8, seed=22)
    ref, got = outputs(m, held), outputs(a, held)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    # ... while the weights really changed
    assert not np.allclose(const(a, "conv1"), const(m, "conv1"))
    assert not np.allclose(const(a, "conv2"), const(m, "conv2"))


def test_alignment_follows_pots_math(net):
    """y' = (y - a) / s with a = (lo + hi) / 2 and s = (hi - lo) / median(hi - lo) from the per-channel
    quantile statistics of the producer's biased output."""
    m, samples, fp32, a, report, aligned = net
    y = fp32["conv1/add"].astype(np.float64)
    lo, hi = channel_ranges(y)
    shift = (lo + hi) / 2
    scale = np.clip((hi - lo) / np.median(hi - lo), 1e-2, 1e2)
    assert scale.max() / scale.min() > 10          # the channels really differ
    want = (y - shift[None, None, :, None, None]) / scale[None, None, :, None, None]
    got = aligned["conv1/add"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    (pair,) = entry(report, "ActivationChannelAlignment")["pairs"]
    np.testing.assert_allclose(pair["scale_range"], [scale.min(), scale.max()], rtol=1e-3)
    assert pair["scale_range"] != [1.0, 1.0]


def test_aligned_channels_have_similar_ranges(net):
    _, _, fp32, _, _, aligned = net
    before, after = spread(fp32["conv1/add"]), spread(aligned["conv1/add"])
    assert before > 10
    assert after < 1.5
    lo, hi = channel_ranges(aligned["conv1/add"])
    assert np.abs((lo + hi) / 2).max() < 0.05 * (hi - lo).max()   # centred at 0


def test_alignment_skips_ignored_layers(net):
    m, samples, *_ = net
    for scope in (["conv2"], ["conv1"]):
        a, report = run(m, samples, pipeline=("ActivationChannelAlignment",), ignored={"scope": scope})
        assert entry(report, "ActivationChannelAlignment")["n_pairs"] == 0, scope
        np.testing.assert_array_equal(const(a, "conv1"), const(m, "conv1"))


@pytest.mark.parametrize("ignored", [{"scope": ["conv[12]"]}, {"operations": [{"type": "Convolution"}]}],
                         ids=["regex", "operations"])
def test_alignment_skips_layers_ignored_by_regex_or_type(net, ignored):
    m, samples, *_ = net
    _, report = run(m, samples, pipeline=("ActivationChannelAlignment", "MinMaxQuantization"), ignored=ignored)
    assert "conv2" in entry(report, "MinMaxQuantization")["ignored"]
    assert entry(report, "ActivationChannelAlignment")["n_pairs"] == 0


# ---- DefaultQuantization: derived statistics ------------------------------------------------------------
def per_sample(a: np.ndarray, fn) -> np.ndarray:
    return np.array([fn(x.astype(np.float64).ravel()) for x in a])


def test_minmax_range_of_the_aligned_tensor_matches_numpy(net):
    m, samples, _, _, _, aligned = net
    q, report = run(m, samples)
    assert entry(report, "ActivationChannelAlignment")["n_pairs"] == 1
    fq = nodes(q)["conv2"].input_value(0).get_node()
    assert fq.get_type_name() == "FakeQuantize" and fq.input_value(0).get_node().get_friendly_name() == "conv1/add"
    lo, hi = (Graph.constant_value(fq.input_value(i)).astype(np.float64) for i in (1, 2))
    y = aligned["conv1/add"]
    want = per_sample(y, lambda v: np.abs(v).max()).mean()     # symmetric: abs_max / mean
    np.testing.assert_allclose(hi, want, rtol=1e-5)
    assert y.min() < 0
    np.testing.assert_allclose(lo, -hi * 128 / 127, rtol=1e-6)


def test_mixed_preset_derived_asymmetric_estimates(net):
    m, samples, _, _, _, aligned = net
    q, _ = run(m, samples, preset="mixed")
    fq = nodes(q)["conv2"].input_value(0).get_node()
    lo, hi = (float(Graph.constant_value(fq.input_value(i))) for i in (1, 2))
    y = aligned["conv1/add"]
    mn, mx = per_sample(y, np.min).mean(), per_sample(y, np.max).mean()  # min / mean, max / mean
    zp = -lo * 255 / (hi - lo)
    assert abs(zp - round(zp)) < 1e-4
    assert np.isclose(lo, mn, rtol=1e-5) or np.isclose(hi, mx, rtol=1e-5)
    assert abs(lo - mn) + abs(hi - mx) < 0.02 * (mx - mn)


def test_bias_correction_uses_the_aligned_statistics(net):
    """Exact-form FBC in the same pass: the shift of each layer equals numpy's on the aligned model."""
    m, samples, _, a, _, aligned = net
    q, report = run(m, samples, bias_correction_form="exact")
    rep = {r["layer"]: r for r in entry(report, "FastBiasCorrection")["layers"]}
    # conv2 (1x1) reads the aligned tensor: shift = (W - W_q) . mean(aligned input)
    fq = nodes(q)["conv2"].input_value(1).get_node()
    w = Graph.constant_value(fq.input_value(0)).astype(np.float64)
    np.testing.assert_allclose(w, const(a, "conv2"), rtol=1e-6)      # the aligned weights were quantized
    wq = fake_quantize_value(fq, w)
    xbar = aligned["conv1/add"].astype(np.float64).mean(axis=(0, 1, 3, 4))
    d = np.einsum("oc,c->o", (w - wq)[:, :, 0, 0], xbar)
    got = const(q, "conv2/add") - const(a, "conv2/add")
    assert rep["conv2"]["corrected"]
    np.testing.assert_allclose(got.ravel(), d, rtol=0, atol=1e-4 * np.abs(d).max() + 1e-8)


def test_consumer_weights_use_the_saturation_fix_grid(net):
    m, samples, *_ = net
    q, report = quantize_with_report(m, samples)
    fixed = {e["tensor"]: e["saturation_fix"] for e in entry(report, "MinMaxQuantization")["quantizers"]
             if e["kind"] == "weights"}
    assert fixed == {"conv1:1": True, "conv2:1": True, "conv3:1": False, "fc:1": False}

    def int_weights(layer):
        c = nodes(q)[layer].input_value(1).get_node()      # Multiply <- Convert <- int8 Constant
        assert c.get_type_name() == "Multiply"
        c = c.input_value(0).get_node().input_value(0).get_node()
        assert c.get_type_name() == "Constant" and c.get_output_element_type(0) == ov.Type.i8
        return np.abs(np.array(c.get_data()).astype(np.int64))

    assert int_weights("conv2").max() <= 64
    assert int_weights("conv3").max() == 127
    # on GPU neither the first layer nor the aligned consumer get it
    q, report = quantize_with_report(m, samples, target_device="GPU")
    assert entry(report, "ActivationChannelAlignment")["n_pairs"] == 1
    assert not any(e.get("saturation_fix") for e in entry(report, "MinMaxQuantization")["quantizers"])
    assert int_weights("conv2").max() == 127


def test_quantile_estimators_leave_the_pairs_alone(net):
    m, samples, *_ = net
    q, report = run(m, samples, activations={"range_estimator": {"preset": "quantile"}}, first_layer_rounding=False)
    e = entry(report, "ActivationChannelAlignment")
    assert e["n_pairs"] == 0 and e["pairs"] == []
    assert "quantile" in e["skipped"] and "channel alignment is off" in e["skipped"]
    np.testing.assert_array_equal(const(q, "conv1"), const(m, "conv1"))
    np.testing.assert_array_equal(const(q, "conv2"), const(m, "conv2"))
    fixed = {x["tensor"]: x["saturation_fix"] for x in entry(report, "MinMaxQuantization")["quantizers"]
             if x["kind"] == "weights"}
    assert fixed["conv2:1"] is False       # no alignment, no rescaled consumer
