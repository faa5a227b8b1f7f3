"""ActivationGranularityChoice (per-tensor or per-channel depthwise inputs by held-back error), its
estimator ``fq_channel_error`` and aggregator ``skip_first``: against numpy references on real OpenVINO
inference of small opset-built models."""
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from ovquant.api import quantize_with_report
from ovquant.engine import Engine
from ovquant.plugins.algorithms.granularity_choice import HELD_BACK
from ovquant import registry
from ovquant.registry import make_aggregator
from ovquant.statistics import Statistic, TensorRef

C, HW = 6, 8


def np_fq(x, lo, hi, levels=256):
    """OpenVINO's FakeQuantize in numpy (float64)."""
    q = np.round((np.clip(x, lo, hi) - lo) / (hi - lo) * (levels - 1))
    return q / (levels - 1) * (hi - lo) + lo


def depthwise_net(seed=0) -> ov.Model:
    """input -> depthwise 3x3 conv + bias -> output: the depthwise input is the model input itself."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, C, HW, HW], np.float32, name="x")
    w = ops.constant((rng.standard_normal((C, 1, 1, 3, 3)) * 0.5).astype(np.float32), name="dw/weights")
    y = ops.group_convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1], name="dw")
    y = ops.add(y, ops.constant(np.zeros((1, C, 1, 1), np.float32)), name="dw/add")
    return ov.Model([ops.result(y, name="out")], [x], "depthwise_net")


def samples_scaled(n, seed):
    """Non-negative inputs whose channels differ in scale 100-fold: per channel should win."""
    rng = np.random.default_rng(seed)
    scale = np.logspace(0, -2, C).reshape(1, C, 1, 1)
    return [(np.abs(rng.standard_normal((1, C, HW, HW))) * scale).astype(np.float32) for _ in range(n)]


def samples_rare_channel(n, seed):
    """Non-negative, equal-scale inputs but for channel 0, which fires only on the first HELD_BACK samples
    (as a class-specific channel fires on few images): its per-channel range from the other samples is
    the 1% floor, and it clips on the samples where it fires; the per-tensor range does not."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = np.abs(rng.standard_normal((1, C, HW, HW)))
        if i >= HELD_BACK:
            x[:, 0] *= 1e-3
        out.append(x.astype(np.float32))
    return out


def reference_choice(model, samples):
    """MinMax's symmetric unsigned ranges (per tensor: mean of per-sample abs max; per channel: max of
    per-sample channel abs max, floored at 1% of the largest) fit on the samples after the first
    HELD_BACK, scored on the first HELD_BACK by sum_c ||w_c||^2 * mean (FQ(x_c) - x_c)^2."""
    x = np.concatenate(samples).astype(np.float64)           # [N, C, H, W]
    fit, held = x[HELD_BACK:], x[:HELD_BACK]
    hi_pt = np.mean(fit.reshape(len(fit), -1).max(1))
    hi_pc = fit.max(axis=(0, 2, 3))
    hi_pc = np.maximum(hi_pc, max(8e-5, 0.01 * hi_pc.max()))
    w = next(n for n in model.get_ordered_ops() if n.get_friendly_name() == "dw/weights").get_data()
    energy = (w.reshape(C, -1).astype(np.float64) ** 2).sum(1)
    err_pt = ((np_fq(held, 0.0, hi_pt) - held) ** 2).mean(axis=(0, 2, 3))
    err_pc = ((np_fq(held, 0.0, hi_pc.reshape(1, C, 1, 1)) - held) ** 2).mean(axis=(0, 2, 3))
    return float(energy @ err_pt), float(energy @ err_pc)


def fq_range(fq):
    return [np.asarray(fq.input_value(i).get_node().get_data()) for i in (1, 2)]


@pytest.mark.parametrize("make, expect", [(samples_scaled, "perchannel"), (samples_rare_channel, "pertensor")])
def test_choice_matches_numpy_reference(make, expect):
    m = depthwise_net()
    samples = make(HELD_BACK + 96, seed=3)
    q, report = quantize_with_report(m, samples, subset_size=len(samples), activation_range_choice="no")
    (entry,) = [a for a in report["algorithms"] if a["name"] == "ActivationGranularityChoice"]
    (choice,) = entry["choices"]
    s_pt, s_pc = reference_choice(m, samples)
    assert choice["score_pertensor"] == pytest.approx(s_pt, rel=1e-3)
    assert choice["score_perchannel"] == pytest.approx(s_pc, rel=1e-3)
    assert choice["granularity"] == expect == ("perchannel" if s_pc < s_pt else "pertensor")
    (fq,) = [n for n in q.get_ordered_ops() if n.get_type_name() == "FakeQuantize"
             and n.input_value(0).get_node().get_type_name() == "Parameter"]
    lo, hi = fq_range(fq)
    x = np.concatenate(samples)
    if expect == "perchannel":   # the range from every sample, per channel
        ref = x.max(axis=(0, 2, 3))
        assert hi.shape == (1, C, 1, 1)
        np.testing.assert_allclose(hi.ravel(), np.maximum(ref, 0.01 * ref.max()), rtol=1e-5)
        assert np.all(lo == 0)
    else:                        # as MinMax placed it: per tensor, every sample
        assert hi.size == 1
        np.testing.assert_allclose(hi, np.mean(x.reshape(len(x), -1).max(1)), rtol=1e-5)


def test_config_that_fixes_the_granularity_is_obeyed():
    m = depthwise_net()
    samples = samples_scaled(HELD_BACK + 96, seed=3)
    for auto in ("pertensor", "perchannel"):
        _, report = quantize_with_report(m, samples, subset_size=len(samples), activation_range_choice="no",
                                         auto_activations_granularity=auto)
        assert "ActivationGranularityChoice" not in [a["name"] for a in report["algorithms"]]
    _, report = quantize_with_report(m, samples, subset_size=len(samples), activation_range_choice="no",
                                     activations={"granularity": "pertensor"})
    assert "ActivationGranularityChoice" not in [a["name"] for a in report["algorithms"]]


def test_too_few_samples_leave_the_quantizer_per_tensor():
    m = depthwise_net()
    samples = samples_scaled(HELD_BACK // 2, seed=3)
    q, report = quantize_with_report(m, samples, subset_size=len(samples), activation_range_choice="no")
    (entry,) = [a for a in report["algorithms"] if a["name"] == "ActivationGranularityChoice"]
    assert entry["n_scored"] == 0
    fq = next(n for n in q.get_ordered_ops() if n.get_type_name() == "FakeQuantize")
    assert fq_range(fq)[1].size == 1


def test_fq_channel_error_in_graph_matches_numpy_on_real_inference():
    m = models.conv_net()
    samples = models.random_samples(m, 5, seed=4)
    x = models.activations(m, ["relu2"], samples)["relu2"].astype(np.float64)   # [N, 1, 16, h, w]
    x = x.reshape(len(samples), *x.shape[2:])
    lows, highs = ((0.0,), tuple(np.zeros(16).tolist())), ((1.5,), tuple(np.linspace(0.5, 3.0, 16).tolist()))
    st = Statistic.make(TensorRef("relu2"), "fq_channel_error", "mean", 1,
                        {"lows": lows, "highs": highs, "levels": 256, "axis": 1})
    value = Engine().collect(m, [st], samples)[st]
    ref = np.stack([((np_fq(x, 0.0, 1.5) - x) ** 2).mean(axis=(0, 2, 3)),
                    ((np_fq(x, 0.0, np.array(highs[1]).reshape(1, 16, 1, 1)) - x) ** 2).mean(axis=(0, 2, 3))], -1)
    assert value.shape == (16, 2)
    np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-9)
    assert np.count_nonzero(ref[:, 0] != ref[:, 1]) > 8   # the candidates differ (dead channels: 0 both)


def test_fq_channel_error_subsampled_in_graph_matches_numpy():
    m = models.big_conv_net()
    samples = models.random_samples(m, 3, seed=6)
    name = next(n.get_friendly_name() for n in m.get_ordered_ops() if n.get_type_name() == "Relu")
    x = models.activations(m, [name], samples)[name].astype(np.float64)
    x = x.reshape(len(samples), *x.shape[2:])                                 # [N, C, H, W]
    c = x.shape[1]
    lows, highs = ((0.0,), (0.0,) * c), ((1.0,), tuple(np.linspace(0.5, 2.0, c).tolist()))
    params = {"lows": lows, "highs": highs, "levels": 256, "axis": 1, "max_positions": 20}
    st = Statistic.make(TensorRef(name), "fq_channel_error", "mean", 1, params)
    value = Engine().collect(m, [st], samples)[st]
    s = registry.make_estimator("fq_channel_error", **params).stride(x.shape)
    assert s > 1 and s % 2 == 1 and -(-x.shape[2] // s) * -(-x.shape[3] // s) <= 20
    xs = x[:, :, ::s, ::s]
    ref = np.stack([((np_fq(xs, 0.0, 1.0) - xs) ** 2).mean(axis=(0, 2, 3)),
                    ((np_fq(xs, 0.0, np.array(highs[1]).reshape(1, c, 1, 1)) - xs) ** 2).mean(axis=(0, 2, 3))], -1)
    np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-9)


def test_skip_first_aggregator_skips_the_first_rows():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((10, 3)).astype(np.float32)
    agg = make_aggregator("skip_first", inner="max", skip=4)
    agg.update(rows[:3])
    agg.update(rows[3:7])
    agg.update(rows[7:])
    np.testing.assert_array_equal(agg.result(), rows[4:].max(0))
    mean = make_aggregator("skip_first", inner="mean", skip=9)
    mean.update(rows)
    np.testing.assert_allclose(mean.result(), rows[9], rtol=1e-6)
    empty = make_aggregator("skip_first", inner="mean", skip=20)
    empty.update(rows)
    assert np.isnan(empty.result())


def test_skip_first_aggregator_through_the_engine():
    m = models.conv_net()
    samples = models.random_samples(m, 7, seed=5)
    x = models.activations(m, ["relu2"], samples)["relu2"]
    st = Statistic.make(TensorRef("relu2"), "max", "skip_first", 1, None, {"inner": "max", "skip": 3})
    value = Engine().collect(m, [st], samples)[st]
    np.testing.assert_allclose(value, x[3:].reshape(4, 16, -1).max(axis=(0, 2)), rtol=1e-6)
