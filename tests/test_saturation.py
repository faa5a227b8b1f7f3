"""The saturation fix's ``"measured"`` mode (plugins/algorithms/saturation.py): oneDNN's pairing of input
channels on a CPU without VNNI (ONEDNN_MAX_CPU_ISA=AVX2 in a subprocess stands for one), the per-channel
widening against a numpy reference of its math, and a quantized model whose outputs on the capped CPU
equal the native ones where the 8-bit grid would overflow."""
import os
import subprocess
import sys

import numpy as np
import openvino as ov
import openvino.opset13 as op
import pytest

from ovquant.api import build_pipeline
from ovquant.plugins.algorithms import saturation as S

CAPPED = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")


def _fq(x, lo, hi, levels=256):
    c = lambda v: op.constant(np.array(v, np.float32))
    return op.fake_quantize(x, c(lo), c(hi), c(lo), c(hi), levels)


def _probe_model(w, cin, groups=None, act=(0.0, 255.0)):
    """u8 (or s8) integers in, int8 weights, one convolution: its output is the exact integer sum."""
    p = op.parameter([1, cin, 4, 4], np.float32, name="x")
    wq = _fq(op.constant(w.astype(np.float32)), -128.0, 127.0)
    a = _fq(p, act[0], act[1])
    if groups:
        shape = [groups, w.shape[0] // groups, w.shape[1], 1, 1]
        wq = op.reshape(wq, op.constant(np.array(shape, np.int64)), False)
        y = op.group_convolution(a, wq, [1, 1], [0, 0], [0, 0], [1, 1])
    else:
        y = op.convolution(a, wq, [1, 1], [0, 0], [0, 0], [1, 1])
    return ov.Model([y], [p])


def _run_capped(xml: str, x: np.ndarray, tmp_path) -> np.ndarray:
    """Output 0 of ``xml`` on ``x``, compiled in a process with oneDNN capped at AVX2."""
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, openvino as ov\n"
            "c = ov.Core().compile_model(sys.argv[1], 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})\n"
            "np.save(sys.argv[3], c(np.load(sys.argv[2]))[0])\n")
    subprocess.run([sys.executable, "-c", code, xml, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, env=CAPPED, capture_output=True)
    return np.load(tmp_path / "y.npy")


def test_without_vnni_neighbouring_input_channels_pair_and_saturate(tmp_path):
    """What the module's math assumes, on the capped CPU: channels (0, 1) and (2, 3) pair, (1, 2) do not,
    a group convolution pairs within each group the same way, a depthwise convolution has no pairs, and s8
    inputs are shifted by +128 first."""
    cases = {"pair01": ([127, 127, 0, 0], 4, None, (0.0, 255.0), 255),
             "pair23": ([0, 0, 127, 127], 4, None, (0.0, 255.0), 255),
             "apart12": ([0, 127, 127, 0], 4, None, (0.0, 255.0), 255),
             "depthwise": ([127], 4, 4, (0.0, 255.0), 255),
             "group_pair01": ([127, 127], 4, 2, (0.0, 255.0), 255),
             "group_apart12": ([0, 127, 127], 6, 2, (0.0, 255.0), 255),
             "signed": ([127, 127, 0, 0], 4, None, (-128.0, 127.0), 127)}
    got = {}
    for name, (wv, cin, groups, act, xv) in cases.items():
        w = np.zeros((4, len(wv), 1, 1))
        w[:, :, 0, 0] = wv
        xml = str(tmp_path / f"{name}.xml")
        ov.save_model(_probe_model(w, cin, groups, act), xml, compress_to_fp16=False)
        x = np.full((1, cin, 4, 4), xv, np.float32)
        exact = xv * sum(wv)
        got[name] = (float(_run_capped(xml, x, tmp_path).ravel()[0]), float(exact))
    assert got["pair01"] == (32767.0, 64770.0), got
    assert got["pair23"] == (32767.0, 64770.0), got
    assert got["apart12"][0] == got["apart12"][1], got
    assert got["depthwise"][0] == got["depthwise"][1], got
    assert got["group_pair01"] == (32767.0, 64770.0), got          # pairs within a group, as in a convolution
    assert got["group_apart12"][0] == got["group_apart12"][1], got
    # 127 + 128 = 255 per input: the pair saturates at 32767, then 128 * 254 is taken off again
    assert got["signed"] == (32767.0 - 128 * 254, 127.0 * 254), got


def _risk_reference(q, a):
    """Per output channel of conv integers ``q`` [O, I, k, k]: the largest pair sum magnitude, in plain loops."""
    out = np.zeros(q.shape[0])
    for o in range(q.shape[0]):
        for p in range(0, q.shape[1], 2):
            for t in np.ndindex(*q.shape[2:]):
                q0 = q[(o, p) + t]
                q1 = q[(o, p + 1) + t] if p + 1 < q.shape[1] else 0
                a1 = a[p + 1] if p + 1 < q.shape[1] else 0
                s = a[p] * abs(q0) + a1 * abs(q1) if q0 * q1 > 0 else max(a[p] * abs(q0), a1 * abs(q1))
                out[o] = max(out[o], s)
    return out


def test_widen_keeps_every_pair_within_int16_with_the_finest_grid(monkeypatch):
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 5, 3, 3))
    w[0, :2] = np.abs(w[0, :2]) + 2      # channel 0: large same-sign neighbours (needs widening)
    w[1, 0::2], w[1, 1::2] = 3.0, -3.0   # channel 1: neighbours of opposite signs (never overflows)
    hi = np.abs(w).max(axis=(1, 2, 3), keepdims=True)
    a = np.array([255, 250, 40, 255, 3], np.float64)
    node = _probe_model(np.zeros((6, 5, 3, 3)), 5).get_ordered_ops()
    conv = next(n for n in node if n.get_type_name() == "Convolution")
    full = S.seven_bit_factor(255)
    risk = _risk_reference(np.round(w / (hi / 127)), a)
    np.testing.assert_allclose(S._pair_risk(np.round(w / (hi / 127)), a.reshape(1, 5, 1, 1), 1, (0,)).ravel(), risk)
    monkeypatch.setattr(S, "activation_maxima", lambda mm, n, st: a)   # the maxima as if measured
    lo2, hi2, n = S.widen(None, conv, w, -hi, hi, 255, {}, full)
    f = (hi2 / hi).ravel()
    after = _risk_reference(np.round(w / (hi2 / 127)), a)
    assert np.all(after <= S.SAFE), after
    assert np.all((f == 1) == (risk <= S.SAFE)) and n == int((risk > S.SAFE).sum()) and n >= 1
    assert f[1] == 1.0 and f[0] > 1.0 and np.all(f <= full)
    np.testing.assert_allclose(lo2, -hi2)
    for o in np.flatnonzero(f > 1):   # the finest grid of the 2% steps: one step finer overflows
        finer = hi[o] * max(1.0, f[o] / 1.02)
        if finer.item() > hi[o].item():
            assert _risk_reference(np.round(w[o:o + 1] / (finer / 127)), a)[0] > S.SAFE


def _pipeline_model():
    """Parameter -> Conv -> Relu -> Conv(8 -> 4): the second conv's channels 0 and 1 are large together,
    output channel 0 has large same-sign neighbour weights, channel 1 alternating signs."""
    rng = np.random.default_rng(0)
    p = op.parameter([1, 3, 8, 8], np.float32, name="x")
    w1 = rng.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.3
    w1[:2] = np.abs(w1[:2])
    h = op.relu(op.convolution(p, op.constant(w1), [1, 1], [1, 1], [1, 1], [1, 1]))
    w2 = rng.normal(size=(4, 8, 1, 1)).astype(np.float32) * 0.1
    w2[0, :2] = 1.0
    w2[1, 0::2], w2[1, 1::2] = 1.0, -1.0
    y = op.convolution(h, op.constant(w2), [1, 1], [0, 0], [0, 0], [1, 1], name="second")
    return ov.Model([y], [p])


@pytest.mark.parametrize("mode", ["measured", "no"])
def test_measured_model_runs_the_same_without_vnni(mode, tmp_path):
    """Quantized with "measured", the outputs on the capped CPU equal the native ones and stay close to FP32;
    with no fix (the control) the capped outputs are far from FP32, so the test can tell."""
    m = _pipeline_model()
    rng = np.random.default_rng(1)
    samples = [np.abs(rng.normal(size=(1, 3, 8, 8))).astype(np.float32) * 2 for _ in range(40)]
    pipe = build_pipeline(None, saturation_fix=mode, skip_slow_int8=False, target_device="CPU")
    q, report = pipe.run(m.clone(), samples)
    xml = str(tmp_path / "q.xml")
    ov.save_model(q, xml)
    x = samples[0]
    native = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    capped = _run_capped(xml, x, tmp_path)
    fp32 = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    err = np.abs(capped - fp32).max() / np.abs(fp32).max()   # against FP32: holds on a host without VNNI too
    mm = next(a for a in report["algorithms"] if a["name"] == "MinMaxQuantization")
    second = next(e for e in mm["quantizers"] if e["kind"] == "weights" and e["tensor"].startswith("second:"))
    if mode == "measured":
        np.testing.assert_array_equal(capped, native)
        assert err < 0.02, err
        assert mm["saturation_fix"]["mode"] == "measured"
        assert second["saturation_fix"] and 1 <= second["saturation_fix_channels"] < 4, second
    else:
        assert err > 0.1, err   # 0.25 when written: the pair sums of output channel 0 saturate
        assert not second.get("saturation_fix")


def test_measured_gives_layers_that_layerwise_tuning_rounds_anew_the_7_bit_grid(tmp_path):
    """GPTQ moves integers by more than a step, so with use_layerwise_tuning the measured widening would
    not hold: the tuned layers get the 7-bit grid, and the capped CPU still runs the model as natively."""
    m = _pipeline_model()
    rng = np.random.default_rng(1)
    samples = [np.abs(rng.normal(size=(1, 3, 8, 8))).astype(np.float32) * 2 for _ in range(40)]
    pipe = build_pipeline(None, saturation_fix="measured", use_layerwise_tuning=True, skip_slow_int8=False,
                          target_device="CPU")
    q, report = pipe.run(m.clone(), samples)
    mm = next(a for a in report["algorithms"] if a["name"] == "MinMaxQuantization")
    weights = [e for e in mm["quantizers"] if e["kind"] == "weights"]
    assert weights and all(e["saturation_fix"] and e["saturation_fix_channels"] == e["channels"] for e in weights), weights
    xml = str(tmp_path / "q.xml")
    ov.save_model(q, xml)
    native = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(samples[0])[0]
    np.testing.assert_array_equal(_run_capped(xml, samples[0], tmp_path), native)


def _second_weight_high(model) -> np.ndarray:
    node = next(n for n in model.get_ordered_ops() if n.get_friendly_name() == "second")
    fq = node.input_value(1).get_node()
    assert fq.get_type_name() == "FakeQuantize"
    return fq.input_value(2).get_node().get_data().ravel()


def test_measured_leaves_room_for_the_narrower_ranges_of_activation_range_choice(tmp_path):
    """ActivationRangeChoice may narrow an input's range later (down to 0.7x), which raises its integers:
    with it on, the weights are widened for that too, and the capped CPU still runs the model as natively."""
    m = _pipeline_model()
    rng = np.random.default_rng(1)
    samples = [np.abs(rng.normal(size=(1, 3, 8, 8))).astype(np.float32) * 2 for _ in range(120)]
    his, models = {}, {}
    for choice in ("no", "auto"):
        pipe = build_pipeline(None, saturation_fix="measured", activation_range_choice=choice, skip_slow_int8=False,
                              target_device="CPU")
        models[choice], _ = pipe.run(m.clone(), samples)
        his[choice] = _second_weight_high(models[choice])
    assert np.all(his["auto"] >= his["no"] * (1 - 1e-6)) and np.any(his["auto"] > his["no"] * 1.01), his
    xml = str(tmp_path / "q.xml")
    ov.save_model(models["auto"], xml)
    native = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(samples[0])[0]
    np.testing.assert_array_equal(_run_capped(xml, samples[0], tmp_path), native)
