"""FastBiasCorrection against numpy references on small real OpenVINO models, and the ``window_mean``
estimator it uses (numpy form vs a brute-force loop, in-graph form vs numpy form).

Reference for the exact form: for a biased layer L with float weights W and dequantized weights W_q
(the weight FakeQuantize applied to W), the corrected bias is ``b + mean(L(x; W)) - mean(L(x; W_q))``
over the calibration inputs x of the layer (FP32 activations from ``models.activations``). POT's and
NNCF's mean-blob form: ``b' = ybar - mean(L(blob; W_q))`` with ``blob`` a tensor of the input shape
filled with the per-channel input means, run through the layer with its own strides and padding
(/work/shared/reference/pot.md (i), nncf.md (h))."""
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from ovquant import registry
from ovquant.api import build_pipeline, quantize_with_report
from ovquant.graph import Graph
from ovquant.statistics import reduction_axes

#: for compiling the reference models
CORE = ov.Core()
LAYERS = ("conv1", "dwconv", "dilconv", "fc")


def run(model, samples, pipeline=("MinMaxQuantization", "FastBiasCorrection"), **kw):
    pipe = build_pipeline(None, pipeline=list(pipeline), **kw)
    return pipe.run(model.clone(), samples)


def fbc_entry(report) -> dict:
    (e,) = [a for a in report["algorithms"] if a["name"] == "FastBiasCorrection"]
    return e


def layer_report(report) -> dict:
    return {r["layer"]: r for r in fbc_entry(report)["layers"]}


def nodes(model) -> dict:
    return {n.get_friendly_name(): n for n in model.get_ordered_ops()}


def bias(model, layer: str) -> np.ndarray:
    add = nodes(model)[f"{layer}/add"]
    return Graph.constant_value(add.input_value(1)).astype(np.float64).ravel()


def weights(model, layer: str) -> tuple:
    """(W, W_q): the float weights behind the weight FakeQuantize and W through that FakeQuantize,
    computed by OpenVINO (a one-op model), not by ovquant."""
    fq = nodes(model)[layer].input_value(1).get_node()
    assert fq.get_type_name() == "FakeQuantize"
    w = Graph.constant_value(fq.input_value(0))
    p = ops.parameter(list(w.shape), np.float32)
    consts = [ops.constant(Graph.constant_value(fq.input_value(i))) for i in range(1, 5)]
    f = ops.fake_quantize(p, *consts, int(fq.get_attributes()["levels"]))
    c = CORE.compile_model(ov.Model([ops.result(f)], [p]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return w.astype(np.float64), np.array(c(w)[0], np.float64)


def conv2d(x, w, strides, pads_begin, pads_end, dilations, groups=1) -> np.ndarray:
    """Plain float64 2-D convolution: x [n, c, h, w], w [o, c / groups, kh, kw]."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pads_begin[0], pads_end[0]), (pads_begin[1], pads_end[1])))
    n, _, h, wd = x.shape
    o, ci, kh, kw = w.shape
    oh = (h - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for g in range(groups):
        xs, ws = x[:, g * ci:(g + 1) * ci], np.asarray(w[g * og:(g + 1) * og], np.float64)
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilations[0], j * dilations[1]
                patch = xs[:, :, r0:r0 + strides[0] * (oh - 1) + 1:strides[0], c0:c0 + strides[1] * (ow - 1) + 1:strides[1]]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out


def apply_layer(node, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The layer (no bias) on inputs x, per output channel mean over samples and positions."""
    if node.get_type_name() == "MatMul":
        assert node.get_attributes()["transpose_b"]
        return (x @ w.T).mean(axis=0)
    a = node.get_attributes()
    groups = 1
    if node.get_type_name() == "GroupConvolution":
        groups = w.shape[0]
        w = w.reshape(-1, *w.shape[2:])
    y = conv2d(x, w, a["strides"], a["pads_begin"], a["pads_end"], a["dilations"], groups)
    return y.mean(axis=(0, 2, 3))


@pytest.fixture(scope="module")
def strided():
    """strided_net, calibration inputs with a mean (so that the weight error shifts the outputs), and the
    FP32 input of every biased layer."""
    m = models.strided_net()
    samples = [x + 1.0 for x in models.random_samples(m, 12, seed=11)]
    acts = models.activations(m, ["relu1", "relu2", "gap", "conv1/add", "dwconv/add", "dilconv/add"], samples)
    inputs = {"conv1": np.concatenate(samples), "dwconv": acts["relu1"][:, 0], "dilconv": acts["relu2"][:, 0],
              "fc": acts["gap"][:, 0]}
    return m, samples, inputs, acts


def exact_shift(q, layer, x) -> np.ndarray:
    w, wq = weights(q, layer)
    node = nodes(q)[layer]
    return apply_layer(node, x, w) - apply_layer(node, x, wq)


# ---- the exact form ------------------------------------------------------------------------------------
def test_exact_form_equals_mean_output_difference(strided):
    m, samples, inputs, _ = strided
    q, report = run(m, samples, bias_correction_form="exact")
    assert fbc_entry(report)["form"] == "exact"
    rep = layer_report(report)
    assert set(rep) == set(LAYERS)
    for layer in LAYERS:
        d = exact_shift(q, layer, inputs[layer])
        assert np.abs(d).max() > 1e-5, layer           # the weight error does shift the mean output
        got = bias(q, layer) - bias(m, layer)
        np.testing.assert_allclose(got, d, rtol=0, atol=1e-4 * np.abs(d).max() + 1e-8, err_msg=layer)
        assert rep[layer]["corrected"], layer
        np.testing.assert_allclose(rep[layer]["max_abs_shift"], np.abs(d).max(), rtol=1e-3)


def test_exact_form_through_default_quantization_api(strided):
    """The same correction when DefaultQuantization runs with the exact form (the weights come out
    compressed; the weight FakeQuantizes of a MinMax-only run give W_q)."""
    m, samples, inputs, _ = strided
    q, report = quantize_with_report(m, samples, bias_correction_form="exact", first_layer_rounding=False)
    mm, _ = run(m, samples, pipeline=("MinMaxQuantization",))
    for layer in ("conv1", "dwconv"):
        d = exact_shift(mm, layer, inputs[layer])
        np.testing.assert_allclose(bias(q, layer) - bias(m, layer), d, rtol=0,
                                   atol=1e-4 * np.abs(d).max() + 1e-8, err_msg=layer)


def test_exact_form_on_matmuls_with_both_weight_layouts():
    m = models.fc_net()
    samples = [x + 0.5 for x in models.random_samples(m, 8, seed=15)]
    q, report = run(m, samples, bias_correction_form="exact")
    x1 = np.concatenate(samples).reshape(-1, 8).astype(np.float64)
    x2 = models.activations(m, ["relu1"], samples)["relu1"].reshape(-1, 5).astype(np.float64)
    for layer, x, tb in (("fc1", x1, False), ("fc2", x2, True)):
        assert nodes(q)[layer].get_attributes()["transpose_b"] == tb
        w, wq = weights(q, layer)
        d = ((x @ (w.T if tb else w)) - (x @ (wq.T if tb else wq))).mean(axis=0)
        got = bias(q, layer) - bias(m, layer)
        np.testing.assert_allclose(got, d, rtol=0, atol=1e-4 * np.abs(d).max() + 1e-8, err_msg=layer)
    assert fbc_entry(report)["n_corrected"] == 2


# ---- the fast form (default) ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def meaned_conv_net():
    m = models.conv_net(hw=32)
    samples = [x + 2.0 for x in models.random_samples(m, 12, seed=12)]
    return m, samples


def test_fast_form_is_the_default_and_close_to_the_exact_one(meaned_conv_net):
    m, samples = meaned_conv_net
    qf, rf = run(m, samples)
    qe, _ = run(m, samples, bias_correction_form="exact")
    assert fbc_entry(rf)["form"] == "fast"
    layers = ("conv1", "conv2", "dwconv", "fc")
    fast = {n: bias(qf, n) - bias(m, n) for n in layers}
    exact = {n: bias(qe, n) - bias(m, n) for n in layers}
    for n in layers:
        assert np.linalg.norm(exact[n]) > 0, n
        assert np.linalg.norm(fast[n] - exact[n]) < 0.1 * np.linalg.norm(exact[n]), n
    # a MatMul has no spatial structure: both forms are the same there
    np.testing.assert_allclose(fast["fc"], exact["fc"], rtol=1e-4, atol=1e-9)


def _outputs(model, samples) -> np.ndarray:
    c = CORE.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    r = c.create_infer_request()
    return np.stack([np.array(r.infer(s)[0], np.float64) for s in samples])


@pytest.mark.parametrize("bits,factor", [(8, 1.02), (4, 0.5)])
def test_fast_bias_correction_does_not_make_the_model_worse(bits, factor):
    """Inputs with a strong mean, so the weight error shifts the outputs. With 8-bit weights the shift is
    small (the error is not worse); with 4-bit weights it dominates and FBC removes most of it."""
    m = models.conv_net(hw=16)
    calib = [x + 2.0 for x in models.random_samples(m, 16, seed=13)]
    held = [x + 2.0 for x in models.random_samples(m, 16, seed=14)]
    ref = _outputs(m, held)
    errs, mean_errs = {}, {}
    for pipeline in (["MinMaxQuantization"], ["MinMaxQuantization", "FastBiasCorrection"]):
        q, _ = quantize_with_report(m, calib, pipeline=pipeline, weights={"bits": bits})
        out = _outputs(q, held)
        errs[len(pipeline)] = np.linalg.norm(out - ref) / np.linalg.norm(ref)
        mean_errs[len(pipeline)] = np.abs((out - ref).mean(axis=0)).mean()
    assert errs[2] <= factor * errs[1], errs
    assert mean_errs[2] < mean_errs[1], mean_errs


# ---- the mean-blob form and the threshold ----------------------------------------------------------------
def _tiny_fc_bias(model: ov.Model) -> ov.Model:
    """``model`` with fc's bias channel 0 set to 1e-6: any correction of fc is > 2x that bias."""
    m = model.clone()
    g = Graph(m)
    out = g.node("fc/add").input_value(1)
    b = Graph.constant_value(out).copy()
    b.reshape(-1)[0] = 1e-6
    g.set_constant(out, b)
    return m


def test_mean_blob_threshold_defaults_to_2(strided):
    m0, samples, inputs, _ = strided
    m = _tiny_fc_bias(m0)
    q, report = run(m, samples, bias_correction_form="mean_blob")
    rep = layer_report(report)
    fc = rep["fc"]
    # fc is a MatMul: the mean-blob shift is exact there, (W - W_q) @ mean(x)
    w, wq = weights(q, "fc")
    d = (w - wq) @ inputs["fc"].mean(axis=0)
    b = bias(m, "fc")
    np.testing.assert_allclose(fc["magnitude"], np.abs(d / b).max(), rtol=1e-3)
    assert fc["magnitude"] > 2
    assert not fc["corrected"]
    np.testing.assert_array_equal(bias(q, "fc"), b)           # skipped: the bias is kept
    entry = fbc_entry(report)
    assert entry["n_skipped"] == sum(not r["corrected"] for r in rep.values()) >= 1
    for r in rep.values():                                     # every layer follows the threshold
        assert r["corrected"] == (r["magnitude"] < 2.0), r

    q, report = run(m, samples, bias_correction_form="mean_blob", threshold=1e9)
    assert layer_report(report)["fc"]["corrected"]
    np.testing.assert_allclose(bias(q, "fc") - b, d, rtol=0, atol=1e-4 * np.abs(d).max() + 1e-8)


def test_fast_form_has_no_threshold_unless_given(strided):
    m0, samples, _, _ = strided
    m = _tiny_fc_bias(m0)
    _, report = run(m, samples)
    rep = layer_report(report)
    assert rep["fc"]["magnitude"] > 2 and rep["fc"]["corrected"]
    assert fbc_entry(report)["n_skipped"] == 0
    _, report = run(m, samples, threshold=2.0)
    assert not layer_report(report)["fc"]["corrected"]


def test_mean_blob_form_equals_pots(strided):
    m, samples, inputs, acts = strided
    q, _ = run(m, samples, bias_correction_form="mean_blob", threshold=1e9)
    for layer in ("conv1", "dwconv", "dilconv"):
        node = nodes(q)[layer]
        _, wq = weights(q, layer)
        x = inputs[layer]
        blob = np.broadcast_to(x.mean(axis=(0, 2, 3))[None, :, None, None], (1,) + x.shape[1:])
        ybar = acts[f"{layer}/add"][:, 0].mean(axis=(0, 2, 3))
        want = ybar - apply_layer(node, blob, wq)
        np.testing.assert_allclose(bias(q, layer), want, rtol=0, atol=1e-4 * np.abs(want).max(), err_msg=layer)


# ---- the window_mean estimator --------------------------------------------------------------------------
#: (h, w, kernel, strides, dilations, pads_begin, pads_end)
GEOMETRIES = [
    (9, 9, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
    (9, 7, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
    (10, 11, (3, 3), (2, 2), (1, 1), (0, 0), (0, 0)),
    (8, 9, (3, 3), (1, 1), (2, 2), (2, 2), (2, 2)),
    (7, 7, (5, 3), (2, 1), (2, 1), (2, 0), (1, 1)),
    (11, 13, (3, 5), (2, 3), (2, 1), (1, 2), (0, 2)),
    (6, 6, (1, 1), (2, 2), (1, 1), (0, 0), (0, 0)),
    (5, 5, (3, 3), (1, 1), (1, 1), (0, 0), (0, 0)),
]


def out_size(size, k, s, d, pb, pe):
    return (size + pb + pe - d * (k - 1) - 1) // s + 1


def geometry(h, w, kernel, strides, dilations, pads_begin, pads_end) -> dict:
    output = tuple(out_size(n, kernel[a], strides[a], dilations[a], pads_begin[a], pads_end[a]) for a, n in enumerate((h, w)))
    return {"kernel": kernel, "strides": strides, "dilations": dilations, "pads_begin": pads_begin, "output": output}


def brute_window_mean(x, kernel, strides, dilations, pads_begin, output, **_) -> np.ndarray:
    b, c, h, w = x.shape
    out = np.zeros((b, c) + tuple(kernel))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            for p in range(output[0]):
                for q in range(output[1]):
                    r = p * strides[0] + i * dilations[0] - pads_begin[0]
                    s = q * strides[1] + j * dilations[1] - pads_begin[1]
                    if 0 <= r < h and 0 <= s < w:
                        out[:, :, i, j] += x[:, :, r, s]
    return out / (output[0] * output[1])


def _x(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.5, 1.0, shape).astype(np.float32)


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: f"{g[0]}x{g[1]}k{g[2]}s{g[3]}d{g[4]}p{g[5]}{g[6]}")
def test_window_mean_numpy_form_matches_brute_force(geo):
    h, w, *rest = geo
    g = geometry(h, w, *rest)
    x = _x((2, 3, h, w), seed=h * w)
    est = registry.make_estimator("window_mean", **g)
    got = est.reduce(x, reduction_axes(4, 1))
    want = brute_window_mean(x.astype(np.float64), **g)
    assert got.shape == want.shape == (2, 3) + tuple(g["kernel"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _graph_form(est, x: np.ndarray) -> np.ndarray:
    p = ops.parameter(list(x.shape), np.float32)
    out = est.graph_reduce(p.output(0), reduction_axes(4, 1))
    assert out is not None
    c = CORE.compile_model(ov.Model([ops.result(out)], [p]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return est.from_graph(c(x)[0])


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: f"{g[0]}x{g[1]}k{g[2]}s{g[3]}d{g[4]}p{g[5]}{g[6]}")
def test_window_mean_graph_form_matches_numpy_form(geo):
    h, w, *rest = geo
    g = geometry(h, w, *rest)
    x = _x((2, 4, h, w), seed=h + w)
    est = registry.make_estimator("window_mean", **g)
    got = _graph_form(est, x)
    want = est.reduce(x, reduction_axes(4, 1))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("geo", GEOMETRIES[:6], ids=lambda g: f"{g[0]}x{g[1]}k{g[2]}s{g[3]}d{g[4]}p{g[5]}{g[6]}")
def test_mean_of_a_real_convolution_is_weights_times_window_means(geo):
    h, w, kernel, strides, dilations, pads_begin, pads_end = geo
    g = geometry(h, w, kernel, strides, dilations, pads_begin, pads_end)
    x = _x((2, 3, h, w), seed=7)
    wt = np.random.default_rng(8).normal(0, 0.5, (5, 3) + tuple(kernel)).astype(np.float32)
    p = ops.parameter(list(x.shape), np.float32)
    y = ops.convolution(p, ops.constant(wt), list(strides), list(pads_begin), list(pads_end), list(dilations))
    assert tuple(y.get_output_shape(0))[2:] == g["output"]
    c = CORE.compile_model(ov.Model([ops.result(y)], [p]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    mean_out = np.array(c(x)[0], np.float64).mean(axis=(2, 3))
    est = registry.make_estimator("window_mean", **g)
    s_np = est.reduce(x, reduction_axes(4, 1)).astype(np.float64)
    s_graph = _graph_form(est, x).astype(np.float64)
    for s in (s_np, s_graph):
        np.testing.assert_allclose(np.einsum("ocij,bcij->bo", wt.astype(np.float64), s), mean_out, rtol=1e-4, atol=1e-5)
