"""ActivationRangeChoice (clipping range and sign per activation quantizer by held-back consumer error)
and the per-tensor in-graph path of ``fq_channel_error``: against numpy references on real OpenVINO
inference of small opset-built models."""
import numpy as np
import openvino.opset13 as ops

import models
from ovquant.api import quantize_with_report
from ovquant.engine import Engine
from ovquant.plugins.algorithms import range_choice as rc
from ovquant.statistics import Statistic, TensorRef


def np_fq(x, lo, hi, levels=256):
    q = np.round((np.clip(x, lo, hi) - lo) / (hi - lo) * (levels - 1))
    return q / (levels - 1) * (hi - lo) + lo


def test_fq_channel_error_per_tensor_candidates_match_numpy_per_sample():
    m = models.conv_net()
    samples = models.random_samples(m, 5, seed=4)
    x = models.activations(m, ["relu2"], samples)["relu2"].astype(np.float64)
    x = x.reshape(len(samples), *x.shape[2:])                          # [N, C, H, W]
    lows, highs = ((-1.0,), (0.0,), (0.0,)), ((1.0,), (0.5,), (3.0,))
    st = Statistic.make(TensorRef("relu2"), "fq_channel_error", None, 1,
                        {"lows": lows, "highs": highs, "levels": 256, "axis": 1})
    value = Engine().collect(m, [st], samples)[st].reshape(len(samples), x.shape[1], 3)
    ref = np.stack([((np_fq(x, lo[0], hi[0]) - x) ** 2).mean(axis=(2, 3)) for lo, hi in zip(lows, highs)], -1)
    np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-10)
    assert len({round(float(v), 9) for v in ref.sum(axis=(0, 1))}) == 3   # the candidates differ


def test_fq_channel_error_per_tensor_candidates_last_axis_matches_numpy():
    m = models.matmul_net()
    samples = models.random_samples(m, 4, seed=2)
    name = next(n.get_friendly_name() for n in m.get_ordered_ops() if n.get_type_name() == "Parameter")
    x = models.activations(m, [name], samples)[name].astype(np.float64)
    x = x.reshape(len(samples), *x.shape[2:])                          # [N, T, H]
    lows, highs = ((-2.0,), (-0.5,)), ((2.0,), (0.5,))
    st = Statistic.make(TensorRef(name), "fq_channel_error", None, 2,
                        {"lows": lows, "highs": highs, "levels": 256, "axis": 2})
    value = Engine().collect(m, [st], samples)[st].reshape(len(samples), x.shape[2], 2)
    ref = np.stack([((np_fq(x, lo[0], hi[0]) - x) ** 2).mean(axis=1) for lo, hi in zip(lows, highs)], -1)
    np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-10)


def test_fq_channel_error_mixed_candidates_last_axis_one_broadcast_fake_quantize():
    """Per-tensor and per-channel candidates (channel axis last, signed per-channel borders) in one
    broadcast FakeQuantize: one Round in the graph, values as numpy's per candidate."""
    import openvino as ov
    from ovquant import registry

    m = models.matmul_net()
    samples = models.random_samples(m, 4, seed=5)
    name = next(n.get_friendly_name() for n in m.get_ordered_ops() if n.get_type_name() == "Parameter")
    x = models.activations(m, [name], samples)[name].astype(np.float64)
    x = x.reshape(len(samples), *x.shape[2:])                          # [N, T, H]
    h = x.shape[2]
    lows = ((-2.0,), tuple(np.linspace(-1.5, -0.2, h).tolist()), (-0.5,))
    highs = ((2.0,), tuple(np.linspace(0.3, 1.8, h).tolist()), (0.5,))
    params = {"lows": lows, "highs": highs, "levels": 256, "axis": 2}
    est = registry.make_estimator("fq_channel_error", **params)
    p = ops.parameter([1, *x.shape[1:]], np.float32)
    out = est.graph_reduce(p.output(0), (1,))
    graph = ov.Model([ops.result(out)], [p])
    assert [n.get_type_name() for n in graph.get_ordered_ops()].count("Round") == 1
    st = Statistic.make(TensorRef(name), "fq_channel_error", None, 2, params)
    value = Engine().collect(m, [st], samples)[st].reshape(len(samples), h, 3)
    shaped = [np.asarray(v).reshape(1, 1, -1) for v in lows], [np.asarray(v).reshape(1, 1, -1) for v in highs]
    ref = np.stack([((np_fq(x, lo, hi) - x) ** 2).mean(axis=1) for lo, hi in zip(*shaped)], -1)
    np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-10)
    assert len({round(float(v), 9) for v in ref.sum(axis=(0, 1))}) == 3   # the candidates differ


def test_candidates_and_paired_choice():
    c = rc.candidates(-2.0, 1.0, True)
    assert (c[rc.FACTORS.index(1.0)][:2]) == (-2.0, 1.0)
    assert len(c) == 2 * len(rc.FACTORS) and all(k[0] == 0.0 and k[3] for k in c[len(rc.FACTORS):])
    assert len(rc.candidates(0.0, 1.0, True)) == len(rc.FACTORS)   # already unsigned: no duplicates
    rng = np.random.default_rng(0)
    base = 1.0 + rng.random((64, 1))
    s = np.hstack([base, base * 0.5, base * 0.97 + rng.normal(0, 0.2, (64, 1))])
    k, gain = rc.choose(s, 0)
    assert k == 1 and np.isclose(gain[1], np.mean(base * 0.5))
    noisy = np.hstack([base, base + rng.normal(-0.01, 0.5, (64, 1))])   # not measurably better
    assert rc.choose(noisy, 0)[0] == 0


def outlier_dw_net(seed=0):
    """x -> ReLU -> conv 1x1 (8 -> 8): the conv's input has one rare huge value per sample (column 0)."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 8, 6, 6], np.float32, name="x")
    r = ops.relu(x, name="relu")
    w = ops.constant(rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3, name="conv/weights")
    y = ops.convolution(r, w, [1, 1], [0, 0], [0, 0], [1, 1], name="conv")
    import openvino as ov
    return ov.Model([y.output(0)], [x], "outlier")


def _samples(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = np.abs(rng.standard_normal((1, 8, 6, 6))).astype(np.float32)
        v[0, :, 0, 0] = 0
        v[0, rng.integers(8), 0, 0] = 60.0 * rng.random()      # a rare outlier sets the max
        out.append({"x": v})
    return out


def test_range_choice_changes_the_range_where_the_consumer_error_says_so_and_matches_numpy():
    m = outlier_dw_net()
    data = _samples(200, 1)
    q, rep = quantize_with_report(m, data, preset="performance", subset_size=200, activation_range_choice="auto")
    e = next(a for a in rep["algorithms"] if a["name"] == "ActivationRangeChoice")
    fq = next(n for n in q.get_ordered_ops() if n.get_type_name() == "FakeQuantize"
              and n.input_value(0).get_node().get_type_name() == "Relu")
    hi = float(fq.input_value(2).get_node().get_data())
    q0, rep0 = quantize_with_report(outlier_dw_net(), data, preset="performance", subset_size=200,
                                    activation_range_choice="no")
    fq0 = next(n for n in q0.get_ordered_ops() if n.get_type_name() == "FakeQuantize"
               and n.input_value(0).get_node().get_type_name() == "Relu")
    hi0 = float(fq0.input_value(2).get_node().get_data())
    # numpy reference: the consumer-weighted error of every candidate on the first HELD_BACK samples
    x = np.concatenate([d["x"] for d in data[:rc.HELD_BACK]]).astype(np.float64)
    w = fq.output(0).get_target_inputs().pop().get_node().input_value(1).get_node()
    energy = rc.consumer_energy(fq, 1, 8)
    assert energy.shape == (8,) and np.all(energy > 0)
    cands = rc.candidates(0.0, hi0, True)
    scores = np.stack([((np_fq(x, lo, h) - x) ** 2).mean(axis=(2, 3)) @ energy for lo, h, _, _ in cands], -1)
    k, _ = rc.choose(scores, rc.FACTORS.index(1.0))
    assert np.isclose(hi, cands[k][1], rtol=1e-5)
    assert k != rc.FACTORS.index(1.0) and not np.isclose(hi, hi0) and e["n_changed"] == 1   # widened: outliers
    assert not any(a["name"] == "ActivationRangeChoice" for a in rep0["algorithms"])


def _fq_net(hi: float, seed=0):
    """x -> ReLU -> FakeQuantize [0, hi] -> conv 1x1 (8 -> 8), and the same net without the FakeQuantize."""
    import openvino as ov
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
    nets = []
    for quantized in (True, False):
        x = ops.parameter([1, 8, 6, 6], np.float32, name="x")
        t = ops.relu(x, name="relu")
        if quantized:
            c = [ops.constant(np.float32(v)) for v in (0.0, hi, 0.0, hi)]
            t = ops.fake_quantize(t, *c, 256, name="fq")
        y = ops.convolution(t, ops.constant(w), [1, 1], [0, 0], [0, 0], [1, 1], name="conv")
        nets.append(ov.Model([y.output(0)], [x], "fq_net"))
    return nets


def _check(new_hi: float, old_hi: float, data):
    from ovquant.graph import Graph
    from ovquant.pipeline import Context
    from ovquant.registry import lookup
    q, fp32 = _fq_net(new_hi)
    ctx = Context(target=lookup("hw_targets", "CPU"), engine=Engine(), calibration=data, float_model=fp32)
    graph = Graph(q)
    entry = {"names": ["fq"], "changed": True}
    out = rc.ActivationRangeChoice(None, ctx)._check(graph, [(entry, [("fq", 0.0, old_hi)])])
    return out, entry, float(graph.node("fq").input_value(2).get_node().get_data())


def test_check_keeps_a_range_only_where_the_model_output_error_falls_and_matches_numpy():
    rng = np.random.default_rng(3)
    data = [{"x": rng.random((1, 8, 6, 6)).astype(np.float32)} for _ in range(rc.HELD_BACK + rc.CHECK_SAMPLES)]
    out, entry, hi = _check(0.2, 1.0, data)       # the new range clips most values: reverted
    assert out["n_reverted"] == 1 and entry["reverted"] and not entry["changed"] and np.isclose(hi, 1.0)
    assert out["samples"] == rc.CHECK_SAMPLES and out["probe_runs"] == 2 and out["error_chosen"] < out["groups"][0]["error_with"]
    out, entry, hi = _check(1.0, 100.0, data)     # the old range wastes the grid: the new one kept
    assert out["n_reverted"] == 0 and entry["changed"] and np.isclose(hi, 1.0)
    # numpy reference of the whole-model error of both ranges on the check samples (after the scored ones)
    q, fp32 = _fq_net(1.0)
    w = next(n for n in fp32.get_ordered_ops() if n.get_type_name() == "Constant").get_data().astype(np.float64)
    xs = np.concatenate([d["x"] for d in data[rc.HELD_BACK:]]).astype(np.float64)
    conv = lambda t: np.einsum("oc,nchw->nohw", w[:, :, 0, 0], t)
    ref = conv(xs)
    den = np.mean(np.sum(ref.reshape(len(xs), -1) ** 2, axis=1))
    for h, key in ((100.0, "error_unchanged"), (1.0, "error_chosen")):
        e = np.sum((conv(np_fq(xs, 0.0, h)) - ref).reshape(len(xs), -1) ** 2, axis=1) / den
        assert np.isclose(out[key], e.mean(), rtol=1e-3), (key, out[key], e.mean())


def test_float_model_of_the_context_is_the_model_as_received():
    """The run keeps the model it was given, untouched by the quantization edits (constants included)."""
    import openvino as ov
    m = models.conv_net()
    samples = models.random_samples(m, 8, seed=1)
    before = ov.Core().compile_model(m.clone(), "CPU").create_infer_request().infer(samples[0])[0].copy()
    seen = {}
    orig = rc.ActivationRangeChoice._check

    def spy(self, graph, changed):
        seen["float"] = self.context.float_model
        return orig(self, graph, changed)

    rc.ActivationRangeChoice._check = spy
    try:
        quantize_with_report(m, samples, preset="performance", activation_range_choice="auto")
    finally:
        rc.ActivationRangeChoice._check = orig
    after = ov.Core().compile_model(seen["float"], "CPU").create_infer_request().infer(samples[0])[0]
    np.testing.assert_array_equal(before, after)
    assert not any(n.get_type_name() == "FakeQuantize" for n in seen["float"].get_ordered_ops())


def test_dynamic_width_tensors_reduce_in_graph_and_match_numpy():
    """min, max and fq_channel_error on a tensor of dynamic width: in graph (engine counts them) and equal to
    the numpy form with the stride planned for the graph (a dynamic dimension counts as DYNAMIC_NOMINAL)."""
    import openvino as ov
    from ovquant.plugins.estimators import fq_channel_error as fce
    x = ops.parameter(ov.PartialShape([1, 4, 8, -1]), np.float32, name="x")
    r = ops.relu(x, name="relu")
    m = ov.Model([ops.multiply(r, np.float32(2.0)).output(0)], [x], "dyn")
    rng = np.random.default_rng(5)
    samples = [rng.standard_normal((1, 4, 8, 40)).astype(np.float32) for _ in range(6)]
    lows, highs = ((0.0,), (0.0,)), ((1.0,), (2.5,))
    sts = [Statistic.make(TensorRef("relu"), "min", None, 1), Statistic.make(TensorRef("relu"), "max", None, 1),
           Statistic.make(TensorRef("relu"), "fq_channel_error", None, 1,
                          {"lows": lows, "highs": highs, "levels": 256, "axis": 1, "max_positions": 16})]
    eng = Engine()
    got = eng.collect(m, sts, samples)
    assert eng.last_run["n_in_graph"] == eng.last_run["n_reductions"] == 3
    xs = np.maximum(np.concatenate(samples), 0).astype(np.float64)            # [N, C, H, W]
    np.testing.assert_array_equal(got[sts[0]].reshape(6, 4), xs.min(axis=(2, 3)))
    np.testing.assert_array_equal(got[sts[1]].reshape(6, 4), xs.max(axis=(2, 3)))
    est = fce.FqChannelErrorEstimator(lows=lows, highs=highs, max_positions=16)
    s = est.stride([1, 4, 8, fce.DYNAMIC_NOMINAL])
    assert s > 1 and s != est.stride(xs.shape)      # the planned stride, not the one of the actual width
    sub = xs[:, :, ::s, ::s]
    ref = np.stack([((np_fq(sub, lo[0], hi[0]) - sub) ** 2).mean(axis=(2, 3)) for lo, hi in zip(lows, highs)], -1)
    np.testing.assert_allclose(got[sts[2]].reshape(6, 4, 2), ref, rtol=1e-4, atol=1e-9)
