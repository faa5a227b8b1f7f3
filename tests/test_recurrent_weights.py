"""LSTMSequence and GRUSequence weights are quantized per output row (placement's weight channel axes):
each of the gates * hidden rows of W and R gets its own scale, checked against a numpy reference on models
whose rows differ 100x in magnitude, and the CPU plugin still runs the sequence op in int8."""
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import ovquant
from ovquant.float_twin import dequantized


def rnn_net(kind, seed=0, t=6, i=8, h=16):
    rng = np.random.default_rng(seed)
    gates = {"lstm": 4, "gru": 3}[kind]
    rows = lambda cols: (rng.normal(0, 1, (1, gates * h, cols)) *
                         np.logspace(-2, 0, gates * h)[None, :, None]).astype(np.float32)
    x = ops.parameter([1, t, i], np.float32, name="x")
    h0 = ops.parameter([1, 1, h], np.float32, name="h0")   # the CPU runs int8 only with both X and H quantized
    lens = ops.constant(np.array([t], np.int32))
    b = ops.constant(rng.normal(0, 0.1, (1, gates * h)).astype(np.float32))
    w, r = ops.constant(rows(i)), ops.constant(rows(h))
    if kind == "lstm":
        seq = ops.lstm_sequence(x, h0, ops.constant(np.zeros((1, 1, h), np.float32)), lens, w, r, b, h,
                                "forward", name="rnn")
    else:
        seq = ops.gru_sequence(x, h0, lens, w, r, b, h, "forward", name="rnn")
    return ov.Model([ops.result(seq.output(0))], [x, h0]), (w, r)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_weights_get_one_scale_per_output_row(kind):
    m, consts = rnn_net(kind)
    ports = {"lstm": (4, 5), "gru": (3, 4)}[kind]
    float_w = [c.get_data().copy() for c in consts]
    rng = np.random.default_rng(1)
    q = ovquant.quantize(m.clone(), [[rng.normal(0, 1, (1, 6, 8)).astype(np.float32),
                                      rng.normal(0, 0.5, (1, 1, 16)).astype(np.float32)] for _ in range(16)])
    rnn = next(op for op in q.get_ops() if op.get_friendly_name() == "rnn")
    for p, w in zip(ports, float_w):
        got = dequantized(rnn.input_value(p))
        assert got is not None and got.shape == w.shape, f"port {p} is not int8"
        hi = np.abs(w).max(axis=2, keepdims=True)          # numpy reference: symmetric, per row, floored as
        scale = np.maximum(hi, max(8e-5, 0.01 * hi.max())) / 127   # MinMax floors (1% of the largest row)
        want = np.clip(np.round(w / scale), -127, 127) * scale
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(w).max())
        # per tensor, the smallest rows would round to 0: their relative error would be about 1
        rel = np.linalg.norm(got - w, axis=2) / np.linalg.norm(w, axis=2)
        assert rel.max() < 0.02
    cm = ov.Core().compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    prec = {op.get_rt_info()["runtimePrecision"].astype(str) for op in cm.get_runtime_model().get_ops()
            if op.get_rt_info()["layerType"].astype(str) == "RNNSeq"}
    assert prec and prec <= {"u8", "i8"}, prec
