"""LayerwiseTuning and its estimators (``input_gram``, ``fq_mse``) on small real OpenVINO models: the
statistics against numpy and against the layers they describe, GPTQ against a plain reference, the tuned
weights on the FakeQuantize grid, and the whole pipeline against FP32 on held-out samples."""
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from ovquant import registry
from ovquant.api import build_pipeline, output_error, quantize_with_report
from ovquant.graph import Graph
from ovquant.plugins.algorithms.gptq import damped_inverse_cholesky, gptq, hessian_error
from ovquant.plugins.algorithms.layerwise_tuning import LayerwiseTuning
from ovquant.plugins.estimators.input_gram import unpack
from ovquant.quant_math import fake_quantize, fake_quantize_value, weights_of
from ovquant.statistics import reduction_axes

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def compiled(outputs, param):
    return ov.Core().compile_model(ov.Model([ops.result(o) for o in outputs], [param]), "CPU", F32)


# ---- input_gram ----------------------------------------------------------------------------------------
CONV_CASES = [  # input shape, kernel, strides, dilations, pads_begin, pads_end, groups, c_out
    ((1, 4, 9, 9), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1, 6),
    ((1, 4, 9, 9), (3, 3), (2, 2), (1, 1), (0, 0), (1, 1), 1, 6),      # stride 2, asymmetric pads
    ((1, 4, 9, 9), (3, 3), (1, 1), (2, 2), (2, 2), (1, 1), 1, 6),      # dilation 2
    ((1, 8, 10, 10), (3, 3), (2, 2), (1, 1), (0, 0), (1, 1), 2, 6),    # 2 groups
    ((1, 8, 9, 9), (5, 5), (2, 2), (1, 1), (1, 1), (2, 2), 8, 8),      # depthwise 5x5
    ((1, 8, 7, 7), (1, 1), (1, 1), (1, 1), (0, 0), (0, 0), 1, 6),      # 1x1
    ((1, 8, 8, 8), (1, 1), (2, 2), (1, 1), (0, 0), (0, 0), 1, 6),      # 1x1 stride 2
]


def conv_layer(case, rng):
    shape, k, s, d, pb, pe, groups, c_out = case
    p = ops.parameter(list(shape), np.float32)
    c = shape[1]
    if groups == 1:
        w = rng.standard_normal((c_out, c, *k)).astype(np.float32)
        y = ops.convolution(p, ops.constant(w), s, pb, pe, d)
    else:
        w = rng.standard_normal((groups, c_out // groups, c // groups, *k)).astype(np.float32)
        y = ops.group_convolution(p, ops.constant(w), s, pb, pe, d)
    return p, y, w.reshape(groups, c_out // groups, -1)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("max_positions", [None, 4])
def test_input_gram_describes_the_convolution(case, max_positions):
    """mean of y^2 and of y over the positions used = w H w^T and w m; graph form = numpy form."""
    rng = np.random.default_rng(0)
    p, y, w = conv_layer(case, rng)
    x = rng.standard_normal(case[0]).astype(np.float32)
    out = tuple(y.get_output_shape(0))[2:]
    est = registry.make_estimator("input_gram", kernel=case[1], strides=case[2], dilations=case[3],
                                  pads_begin=case[4], output=out, groups=case[6], max_positions=max_positions)
    g = est.graph_reduce(p.output(0), (1, 2, 3))
    yv, gv = compiled([y, g], p)(x).values()
    want = est.reduce(x, (1, 2, 3))
    assert gv.shape == want.shape
    np.testing.assert_allclose(gv, want, rtol=1e-5, atol=1e-5)
    h, m = unpack(want[0])
    (r0, rs, rn), (c0, cs, cn) = est._conv_plan(*case[0][2:])[0]
    used = np.asarray(yv, np.float64)[0][:, r0:r0 + rs * rn:rs, c0:c0 + cs * cn:cs]
    assert used.shape[1:] == (rn, cn) and (max_positions is None or rn * cn <= max_positions)
    used = used.reshape(w.shape[0], w.shape[1], -1)
    np.testing.assert_allclose(np.einsum("grd,gde,gre->gr", w, h, w), (used ** 2).mean(-1), rtol=1e-4)
    np.testing.assert_allclose(np.einsum("grd,gd->gr", w, m), used.mean(-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[6] == c[0][1]])
@pytest.mark.parametrize("max_positions", [None, 4])
def test_input_gram_shared_depthwise(case, max_positions):
    """shared=True: the mean over channels of the per-channel matrices, and every channel's mean."""
    rng = np.random.default_rng(1)
    p, y, _ = conv_layer(case, rng)
    x = rng.standard_normal(case[0]).astype(np.float32)
    x[0, 2] = 0.0
    out = tuple(y.get_output_shape(0))[2:]
    kw = dict(kernel=case[1], strides=case[2], pads_begin=case[4], output=out, groups=case[6],
              max_positions=max_positions)
    full = registry.make_estimator("input_gram", **kw)
    shared = registry.make_estimator("input_gram", shared=True, **kw)
    gv = compiled([shared.graph_reduce(p.output(0), (1, 2, 3))], p)(x)[0]
    want = shared.reduce(x, (1, 2, 3))
    np.testing.assert_allclose(gv, want, rtol=1e-5, atol=1e-6)
    d = case[1][0] * case[1][1]
    assert want.shape == (1, 1, d * (d + 1) // 2 + case[0][1] * d)
    h_c, m_c = unpack(full.reduce(x, (1, 2, 3))[0])
    h, m = unpack(want[0], d)
    np.testing.assert_allclose(h[0], h_c.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m, m_c, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape,max_positions", [((1, 6, 5), None), ((1, 6, 5), 3), ((1, 7), None), ((2, 3, 4, 5), 8)])
def test_input_gram_dense(shape, max_positions):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    p = ops.parameter(list(shape), np.float32)
    est = registry.make_estimator("input_gram", max_positions=max_positions)
    axes = reduction_axes(len(shape), None)
    got = compiled([est.graph_reduce(p.output(0), axes)], p)(x)[0]
    want = est.reduce(x, axes)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for b in range(shape[0]):
        v = x[b].reshape(-1, shape[-1]).astype(np.float64)
        if max_positions is not None and len(v) > max_positions:
            step = -(-len(v) // max_positions)
            n = -(-len(v) // step)
            v = v[(len(v) - 1 - (n - 1) * step) // 2::step][:n]
        h, m = unpack(want[b])
        np.testing.assert_allclose(h[0], v.T @ v / len(v), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m[0], v.mean(0), rtol=1e-5, atol=1e-6)


# ---- fq_mse --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,channel_axis,max_elements", [((1, 8, 6, 6), None, None), ((2, 8, 6, 6), 1, None),
                                                             ((1, 5, 7), None, 10), ((1, 8, 60, 60), None, 1000),
                                                             ((2, 8, 6, 6), 1, 10)])
def test_fq_mse_graph_form_matches_numpy_form(shape, channel_axis, max_elements):
    x = (np.random.default_rng(3).standard_normal(shape) * 2).astype(np.float32)
    axes = reduction_axes(len(shape), channel_axis)
    est = registry.make_estimator("fq_mse", low=-1.5, high=1.4, levels=256, factors=(0.5, 1.0, 2.0),
                                  max_elements=max_elements)
    p = ops.parameter(list(shape), np.float32)
    got = compiled([est.graph_reduce(p.output(0), axes)], p)(x)[0]
    want = est.reduce(x, axes)
    assert got.shape == want.shape == (shape[0],) + ((shape[1],) if channel_axis else ()) + (3,)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    if channel_axis is None:
        step = est.step(shape, axes)
        assert (step == 1) == (max_elements is None)
        sub = x[0].ravel()[::step].astype(np.float64)
        assert step == 1 or (len(sub) <= max_elements and all(np.gcd(step, n) == 1 for n in shape[1:]))
        ref = [((fake_quantize(sub, -1.5 * f, 1.4 * f, 256) - sub) ** 2).mean() for f in (0.5, 1.0, 2.0)]
        np.testing.assert_allclose(want[0], ref, rtol=1e-5)
    else:
        assert est.step(shape, axes) == 1      # per channel: never subsampled


# ---- GPTQ ----------------------------------------------------------------------------------------------
def hessian_error_reference(w, q, h):
    """sum over rows of (w - q) H (w - q)^T, one row at a time."""
    return sum(float((w[r] - q[r]) @ h @ (w[r] - q[r])) for r in range(len(w)))


def gptq_reference(w, h, step, damp):
    """GPTQ (Frantar et al. 2022, Algorithm 1 without lazy batches) for a symmetric grid of ``step``."""
    h = h + damp * np.mean(np.diag(h)) * np.eye(len(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    w = w.copy()
    q = np.zeros_like(w)
    for i in range(w.shape[1]):
        q[:, i] = np.clip(np.round(w[:, i] / step), -127, 127) * step
        err = (w[:, i] - q[:, i]) / u[i, i]
        w[:, i:] -= np.outer(err, u[i, i:])
    return q


def random_problem(rng, rows=12, d=40, n=400):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal(d)
    h = x.T @ x / n
    w = rng.standard_normal((rows, d)) * 0.5
    return w, h


@pytest.mark.parametrize("seed", range(3))
def test_gptq_lowers_the_hessian_weighted_error(seed):
    rng = np.random.default_rng(seed)
    w, h = random_problem(rng)
    step = np.abs(w).max() / 127 * 8          # a coarse grid, where rounding matters

    def quantize(col, j):
        k = np.clip(np.round(col / step), -127, 127)
        return k, k * step

    k, q = gptq(w[None], h[None], quantize, damp=0.01, block=16)
    nearest = np.clip(np.round(w / step), -127, 127) * step
    err_gptq = hessian_error_reference(w, q[0], h)
    err_nearest = hessian_error_reference(w, nearest, h)
    assert err_gptq < 0.7 * err_nearest
    np.testing.assert_allclose(hessian_error((w - q[0])[None], h[None]).sum(), err_gptq, rtol=1e-10)
    np.testing.assert_allclose(q[0], k[0] * step)
    # the lazy-batch (blocked) implementation gives exactly the plain algorithm's result
    np.testing.assert_allclose(q[0], gptq_reference(w, h, step, 0.01), atol=1e-12)


def test_damped_inverse_cholesky():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 150, 100))
    h = a @ np.swapaxes(a, 1, 2) / 100            # rank 100 < 150: needs the dampening
    h[1, 5, :] = h[1, :, 5] = 0.0                 # an input that is always zero
    u, lam = damped_inverse_cholesky(h, 0.01)
    assert np.allclose(np.tril(u, -1), 0) and np.all(np.diagonal(u, axis1=1, axis2=2) > 0)
    hd = h.copy()
    hd[1, 5, 5] = 1.0
    hd += lam[:, None, None] * np.eye(150)
    np.testing.assert_allclose(np.swapaxes(u, 1, 2) @ u, np.linalg.inv(hd), rtol=1e-7, atol=1e-9)


# ---- the algorithm on models -----------------------------------------------------------------------------
@pytest.fixture()
def lt_settings(monkeypatch):
    """Change LayerwiseTuning's class settings for one test."""
    def set_(**kw):
        for k, v in kw.items():
            monkeypatch.setattr(LayerwiseTuning, k, v)
    return set_


def tuned(model, samples, **kw):
    """(model after DefaultQuantization + LayerwiseTuning, with FakeQuantize ops; report entry)."""
    q, report = build_pipeline(None, use_layerwise_tuning=True, **kw).run(model.clone(), samples)
    return q, report["algorithms"][-1]


@pytest.mark.parametrize("build", [models.conv_net, models.strided_net, models.outlier_conv_net])
def test_tuned_weights_are_on_the_fake_quantize_grid(build):
    m = build()
    q, rep = tuned(m, models.random_samples(m, 24, seed=1))
    assert rep["name"] == "LayerwiseTuning" and rep["n_tuned"] >= 2 and sum(e["rows_tuned"] for e in rep["layers"])
    g = Graph(q)
    for e in [e for e in rep["layers"] if e["rows_tuned"]]:
        node = g.node(e["layer"])
        fq = node.input_value(1).get_node()
        w, wq = weights_of(node)
        r = [Graph.constant_value(fq.input_value(i)).astype(np.float64) for i in range(1, 5)]
        step = (r[1] - r[0]) / (int(fq.get_attributes()["levels"]) - 1)
        np.testing.assert_allclose(r[0], r[2], rtol=1e-6)                # input range = output range
        np.testing.assert_allclose(r[1], r[3], rtol=1e-6)
        np.testing.assert_allclose(wq, w, atol=1e-4 * float(np.max(step)))   # the FakeQuantize keeps them
        k = (w - r[0]) / step
        np.testing.assert_allclose(k, np.round(k), atol=1e-3)              # exactly on the grid
    # int8 compression keeps them too: the compressed model computes what the FakeQuantize model does
    compressed = q.clone()
    from ovquant.api import compress_weights
    compress_weights(compressed)
    assert not any(n.get_type_name() == "FakeQuantize" and Graph.constant_node(n.input_value(0)) is not None
                   for n in compressed.get_ordered_ops())
    err = output_error(q, compressed, models.random_samples(m, 4, seed=5), 4)
    assert err[0]["relative_l2"] < 1e-5


def test_weight_scales_change_with_their_fake_quantize(lt_settings):
    """The scale search rescales the four range inputs together and the weights stay on the new grid;
    with one scale factor and no rounding step nothing changes."""
    m = models.outlier_conv_net()
    samples = models.random_samples(m, 24, seed=1)
    base, _ = build_pipeline(None).run(m.clone(), samples)
    lt_settings(tune_activations=False)
    q, rep = tuned(m, samples)
    assert sum(e["rows_rescaled"] for e in rep["layers"]) > 0
    for e in rep["layers"]:
        fq_b = Graph(base).node(e["layer"]).input_value(1).get_node()
        fq_t = Graph(q).node(e["layer"]).input_value(1).get_node()
        ratio = [Graph.constant_value(fq_t.input_value(i)) / Graph.constant_value(fq_b.input_value(i))
                 for i in range(1, 5)]
        for r in ratio[1:]:
            np.testing.assert_allclose(r, ratio[0], rtol=1e-6)
        assert np.all((ratio[0] > 0.69) & (ratio[0] <= 1.0 + 1e-6))
    lt_settings(scale_factors=(1.0,), tune_rounding=False)
    q, rep = tuned(m, samples)
    assert all(e["rows_tuned"] == 0 and e["rows_rescaled"] == 0 for e in rep["layers"])


def test_bias_keeps_the_mean_output(lt_settings):
    """The closed-form bias: after tuning, a layer's mean output on the calibration data (same inputs)
    equals its mean output before tuning (FastBiasCorrection's correction is kept, rounding's is added)."""
    m = models.outlier_conv_net()
    samples = models.random_samples(m, 24, seed=1)
    lt_settings(tune_activations=False, max_positions=None)
    base, _ = build_pipeline(None).run(m.clone(), samples)
    q, rep = tuned(m, samples)
    shifted = {e["layer"] for e in rep["layers"] if e["bias_shift"] > 0}
    assert {"conv2", "fc"} <= shifted
    gb, gq = Graph(base), Graph(q)
    for name in ("conv2", "fc"):                  # a 1x1 convolution and a MatMul
        src = gb.node(name).input_value(0).get_node().get_friendly_name()
        x = models.activations(base, [src], samples)[src]                 # the quantized input
        x = np.moveaxis(x, 2, -1).reshape(-1, x.shape[2]) if x.ndim == 5 else x.reshape(-1, x.shape[-1])
        outs = []
        for g in (gb, gq):
            node = g.node(name)
            _, wq = weights_of(node)
            add, port = g.bias_of(node)
            b = Graph.constant_value(add.input_value(port)).reshape(-1)
            outs.append(np.mean(x @ wq.reshape(wq.shape[0], -1).T, axis=0) + b)
        np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)


def test_pipeline_appends_layerwise_tuning_and_reports():
    m = models.conv_net()
    samples = models.random_samples(m, 16, seed=1)
    q, report = quantize_with_report(m, samples, use_layerwise_tuning=True)
    assert report["pipeline"][-1] == "LayerwiseTuning"
    assert [s["algorithms"] for s in report["stages"]][-1] == ["LayerwiseTuning"]
    rep = report["algorithms"][-1]
    assert rep["n_samples"] == 16 and rep["n_tuned"] == 4 and rep["n_skipped"] == 0
    for e in rep["layers"]:
        assert {"rows", "rows_tuned", "hessian", "relative_error_before", "relative_error_after",
                "bias_shift"} <= set(e)
        assert e["relative_error_after"] <= e["relative_error_before"]
    assert [e["hessian"] for e in rep["layers"]] == ["27x27", "72x72", "9x9 shared", "16x16"]
    assert rep["activations"] and all(a["mse_ratio"] <= 1.0 for a in rep["activations"])
    _, plain = quantize_with_report(m, samples)
    assert plain["pipeline"][-2:] == ["FastBiasCorrection", "ActivationGranularityChoice"]   # the default's last steps (no tuning; SlowInt8Check off in tests)


def test_large_layers_are_skipped_and_reported(lt_settings):
    lt_settings(max_dim=30)
    m = models.conv_net()
    q, rep = tuned(m, models.random_samples(m, 8, seed=1))
    assert {s["layer"]: s["reason"] for s in rep["skipped"]} == {"conv2": "H would be 72x72 (max_dim 30)"}
    assert rep["n_tuned"] == 3


@pytest.mark.parametrize("build", [models.conv_net, models.strided_net, models.residual_net, models.fc_net,
                                   models.outlier_conv_net])
def test_not_worse_than_without_tuning_on_held_out_samples(build):
    m = build()
    cal, held = models.random_samples(m, 32, seed=1), models.random_samples(m, 24, seed=2)
    q0, _ = quantize_with_report(m, cal)
    q1, _ = quantize_with_report(m, cal, use_layerwise_tuning=True)
    e0 = output_error(m, q0, held, 24)[0]["relative_l2"]
    e1 = output_error(m, q1, held, 24)[0]["relative_l2"]
    assert e1 <= e0


@pytest.mark.parametrize("seed", range(3))
def test_rounding_lowers_the_held_out_error_where_it_matters(lt_settings, seed):
    """A first convolution with few output channels and a coarse (3-bit, per-tensor) weight grid: the
    weight steps alone (no activation range search) lower the held-out output error."""
    m = models.first_conv_net(seed=seed, c_out=8)
    cal, held = models.random_samples(m, 32, seed=1), models.random_samples(m, 24, seed=2)
    kw = {"weights": {"bits": 3, "granularity": "pertensor"}, "first_layer_rounding": False}
    lt_settings(tune_activations=False)
    q0, _ = quantize_with_report(m, cal, **kw)
    q1, _ = quantize_with_report(m, cal, use_layerwise_tuning=True, **kw)
    e0 = output_error(m, q0, held, 24)[0]["relative_l2"]
    e1 = output_error(m, q1, held, 24)[0]["relative_l2"]
    assert e1 < 0.97 * e0


def test_activation_ranges_follow_the_error(lt_settings):
    """A heavy-tailed input: MinMax's mean-of-maxima range clips it; the search widens it, lowering the
    quantization error of that tensor on held-out samples too."""
    m = models.first_conv_net(seed=0, c_out=4)
    rng = np.random.default_rng(7)
    heavy = [(rng.standard_t(2, (1, 3, 12, 12)) * 0.5).astype(np.float32) for _ in range(40)]
    base, _ = build_pipeline(None).run(m.clone(), heavy[:24])
    q, rep = tuned(m, heavy[:24])
    act = {a["fake_quantize"]: a for a in rep["activations"]}
    name = next(n for n in act if n.startswith("image"))
    assert act[name]["factor"] > 1.0 and act[name]["mse_ratio"] < 1.0
    errs = []
    for model in (base, q):
        fq = Graph(model).node(name)
        x = np.concatenate([h.ravel() for h in heavy[24:]])
        errs.append(np.mean((fake_quantize_value(fq, x) - x) ** 2))
    assert errs[1] < errs[0]


# ---- FirstLayerRounding (the same tuning, in DefaultQuantization's one pass, for saturation-fixed first layers) ----
def test_first_layer_rounding_in_default_quantization():
    """With first_layer_rounding DefaultQuantization's first pass ends with FirstLayerRounding: the first convolution's
    weights are re-rounded on the saturation fix's 7-bit grid (integers within +-63), the other layers are
    untouched, the mean output is kept, and the held-out output error falls. By default, or with
    saturation_fix "no", it is left out."""
    m = models.conv_net()
    cal, held = models.random_samples(m, 32, seed=1), models.random_samples(m, 24, seed=2)
    q0, r0 = build_pipeline(None, activation_range_choice="no").run(m.clone(), cal)   # the rounding alone
    q1, r1 = build_pipeline(None, first_layer_rounding=True, activation_range_choice="no").run(m.clone(), cal)
    assert "FirstLayerRounding" not in [a["name"] for a in r0["algorithms"]]
    (rep,) = [a for a in r1["algorithms"] if a["name"] == "FirstLayerRounding"]
    assert [a["name"] for a in r1["algorithms"]][-2:] == ["FirstLayerRounding", "ActivationGranularityChoice"]
    assert [e["layer"] for e in rep["layers"]] == ["conv1"]
    assert rep["layers"][0]["rows_tuned"] > 0
    assert rep["layers"][0]["relative_error_after"] < rep["layers"][0]["relative_error_before"]
    g0, g1 = Graph(q0), Graph(q1)
    node = g1.node("conv1")
    fq = node.input_value(1).get_node()
    w, wq = weights_of(node)
    lo, hi = (Graph.constant_value(fq.input_value(i)).astype(np.float64) for i in (1, 2))
    k = (w - lo) / ((hi - lo) / (int(fq.get_attributes()["levels"]) - 1))
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)                   # on the grid
    assert np.all(np.abs(np.round(k) - 127) <= 63)                          # the 7-bit band of the saturation fix
    for name in ("conv2", "dwconv", "fc"):                                  # other layers as MinMax left them
        np.testing.assert_array_equal(weights_of(g1.node(name))[0], weights_of(g0.node(name))[0])
    # the mean output of conv1 on the calibration inputs is kept (bias shifted by the rounding change)
    x = np.stack(cal)[:, 0]                                                 # [n, 3, h, w]
    outs = []
    for g in (g0, g1):
        n_ = g.node("conv1")
        _, wq_ = weights_of(n_)
        add, port = g.bias_of(n_)
        b = Graph.constant_value(add.input_value(port)).reshape(-1)
        y = np.stack([_conv2d(xi, wq_) for xi in x])                        # [n, c, h, w]
        outs.append(y.mean(axis=(0, 2, 3)) + b)
    np.testing.assert_allclose(outs[1], outs[0], rtol=2e-2, atol=2e-3)
    e0 = output_error(m, q0, held, 24)[0]["relative_l2"]
    e1 = output_error(m, q1, held, 24)[0]["relative_l2"]
    assert e1 < e0
    _, r2 = build_pipeline(None, saturation_fix="no", first_layer_rounding=True).run(m.clone(), cal)
    assert "FirstLayerRounding" not in [a["name"] for a in r2["algorithms"]]


def _conv2d(x, w, pad=1):
    """Plain numpy 2-D convolution, stride 1: x [c, h, w], w [o, c, kh, kw] -> [o, h', w']."""
    c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
    cols = np.stack([xp[:, i:i + oh, j:j + ow] for i in range(kh) for j in range(kw)], axis=1)   # [c, k, oh, ow]
    return np.einsum("ock,ckhw->ohw", w.reshape(o, c, kh * kw), cols)
