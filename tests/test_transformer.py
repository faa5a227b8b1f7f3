"""model_type Transformer and SmoothQuant on a small BERT-style encoder layer (real OpenVINO inference)."""
import numpy as np
import openvino as ov
import pytest

import models
from ovquant.api import build_pipeline
from ovquant.graph import Graph

ALPHA = 0.95


def run(model, samples, pipeline=None, **kw):
    """The pipeline alone: weight FakeQuantizes are kept (no compression)."""
    return build_pipeline(None, pipeline=pipeline, **kw).run(model.clone(), samples)


def infer(model, samples) -> np.ndarray:
    req = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    return np.stack([np.array(req.infer(s)[0]) for s in samples])


def fq_range(fq):
    return [np.asarray(Graph.constant_value(fq.input_value(i)), np.float64) for i in (1, 2)]


def upstream_fq(node, port):
    """The FakeQuantize that feeds ``node``'s input ``port`` through Reshape/Transpose, or None."""
    x = node.input_value(port).get_node()
    while x.get_type_name() in ("Reshape", "Transpose"):
        x = x.input_value(0).get_node()
    return x if x.get_type_name() == "FakeQuantize" else None


@pytest.fixture(scope="module")
def enc():
    m = models.encoder_net()
    return m, models.random_samples(m, 24, seed=3)


@pytest.fixture(scope="module")
def quantized(enc):
    m, samples = enc
    return {preset: run(m, samples, model_type="transformer", preset=preset) for preset in ("performance", "mixed")}


def test_transformer_keeps_normalization_residual_and_softmax_math_in_float(quantized):
    q, _ = quantized["performance"]
    fqs = [op for op in q.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    acts = [f for f in fqs if Graph.constant_node(f.input_value(0)) is None]
    assert acts, "nothing quantized"
    for f in acts:
        consumers = {i.get_node().get_type_name() for i in f.output(0).get_target_inputs()}
        assert consumers <= {"MatMul", "Reshape", "Transpose"}, (f.get_friendly_name(), consumers)
        src = f.input_value(0).get_node()
        assert src.get_type_name() not in ("MVN", "Softmax", "Parameter", "Gather"), f.get_friendly_name()
    # the token ids and the embedding output (read by LayerNorm and the residual Add) stay float
    names = {n.get_friendly_name(): n for n in q.get_ordered_ops()}
    assert names["input_ids"].get_element_type() == ov.Type.i64
    assert all(i.get_node().get_type_name() != "FakeQuantize" for i in names["embed"].output(0).get_target_inputs())
    # every weighted MatMul has int8 weights (a weight FakeQuantize); residual Adds read float
    for mm in ("q", "k", "v", "o", "ffn1", "ffn2"):
        assert names[mm].input_value(1).get_node().get_type_name() == "FakeQuantize", mm
        assert names[mm].input_value(0).get_node().get_type_name() == "FakeQuantize", mm
    for add in ("residual1", "residual2"):
        assert all(names[add].input_value(i).get_node().get_type_name() != "FakeQuantize" for i in range(2)), add


def test_attention_quantizes_query_and_key_symmetrically_not_value(quantized):
    for preset in ("performance", "mixed"):
        q, _ = quantized[preset]
        sdpa = next(n for n in q.get_ordered_ops() if n.get_type_name() == "ScaledDotProductAttention")
        fq_q, fq_k, fq_v = (upstream_fq(sdpa, p) for p in range(3))
        assert fq_q is not None and fq_k is not None, preset
        assert fq_v is None, preset   # the attention-by-value product reads V in float on CPU
        for fq in (fq_q, fq_k):
            lo, hi = fq_range(fq)
            levels = int(fq.get_attributes()["levels"])
            # symmetric signed grid: lo = -hi * levels / (levels - 2) (zero point in the middle)
            np.testing.assert_allclose(lo, -hi * levels / (levels - 2), rtol=1e-5, err_msg=preset)
    # in mixed the other activations are asymmetric: the FFN's second MatMul reads Gelu's output
    q, _ = quantized["mixed"]
    names = {n.get_friendly_name(): n for n in q.get_ordered_ops()}
    lo, hi = fq_range(names["ffn2"].input_value(0).get_node())
    levels = int(names["ffn2"].input_value(0).get_node().get_attributes()["levels"])
    assert not np.allclose(lo, -hi * levels / (levels - 2), rtol=1e-3)


def test_quantized_encoder_stays_close_to_fp32(enc, quantized):
    m, samples = enc
    ref = infer(m, samples)
    for preset, (q, _) in quantized.items():
        out = infer(q, samples)
        cos = np.sum(out * ref, axis=-1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1))
        assert cos.mean() > 0.99, (preset, cos.mean())
        assert not np.allclose(out, ref, atol=1e-6), "nothing was quantized"


def test_smooth_quant_matches_numpy(enc):
    """s_k = a_k^alpha / w_k^(1 - alpha), clipped to [quantile_0.1(s), 100], the best min/max ratio of the
    group (Q, K, V read LayerNorm 0's output); the MatMuls read x / s and their weights become W * s."""
    m, samples = enc
    q, report = run(m, samples, pipeline=["SmoothQuant"], model_type="transformer")
    x = models.activations(m, ["ln0/beta"], samples)["ln0/beta"]
    a = np.abs(x).reshape(-1, x.shape[-1]).max(axis=0).astype(np.float64)
    orig = {n.get_friendly_name(): n for n in m.get_ordered_ops()}
    best, ratio = None, -1.0
    for mm in ("q", "k", "v"):
        w = np.abs(Graph.constant_value(orig[mm].input_value(1)).astype(np.float64))   # [out, in]
        s = a ** ALPHA / (w.max(axis=0) ** (1 - ALPHA) + 1e-8)
        s = np.clip(s, np.quantile(s, 0.1), 100.0)
        if s.min() / s.max() > ratio:
            best, ratio = s, s.min() / s.max()
    names = {n.get_friendly_name(): n for n in q.get_ordered_ops()}
    for mm in ("q", "k", "v"):
        mul = names[mm].input_value(0).get_node()
        assert mul.get_type_name() == "Multiply", mm
        inv = next(Graph.constant_value(mul.input_value(i)) for i in range(2)
                   if Graph.constant_node(mul.input_value(i)) is not None)
        np.testing.assert_allclose(inv.ravel(), 1.0 / best, rtol=1e-5, err_msg=mm)
        w0 = Graph.constant_value(orig[mm].input_value(1)).astype(np.float64)
        w1 = Graph.constant_value(names[mm].input_value(1)).astype(np.float64)
        np.testing.assert_allclose(w1, w0 * best[None, :], rtol=1e-5, err_msg=mm)
    (entry,) = [al for al in report["algorithms"] if al["name"] == "SmoothQuant"]
    assert entry["n_smoothed"] >= 1
    # the float function is unchanged, and the outlier channel is tamed
    np.testing.assert_allclose(infer(q, samples), infer(m, samples), rtol=1e-4, atol=1e-4)
    spread_before = a.max() / np.median(a)
    spread_after = (a / best).max() / np.median(a / best)
    assert spread_after < spread_before / 2, (spread_before, spread_after)


def test_smooth_quant_runs_by_default_for_transformers_only(enc):
    m, samples = enc
    names = lambda rep: [al["name"] for al in rep["algorithms"]]
    _, rep = run(m, samples, model_type="transformer")
    assert names(rep)[0] == "SmoothQuant"
    _, rep = run(m, samples, model_type="transformer", use_smooth_quant=False)
    assert "SmoothQuant" not in names(rep)
    _, rep = run(m, samples)
    assert "SmoothQuant" not in names(rep)
