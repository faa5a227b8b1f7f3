"""Accuracy control with a metric: ``quantize_with_accuracy_control`` (NNCF's signature) and POT's
AccuracyAwareQuantization in a config, on a real classifier whose quantization hurts."""
import json
import os
import subprocess
import sys

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import ovquant
from ovquant.accuracy_control import drop_of, quantize_with_accuracy_control_report
from ovquant.errors import ConfigError

ENV = {**os.environ, "OVQUANT_DISABLE_PLUGIN_AUTOLOAD": "1", "OVQUANT_CACHE_DIR": ""}


#: f32 inference, as ovquant compiles: a bf16 default (CPUs with avx512_bf16 or AMX) would change the numbers
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def outlier_classifier(seed=0, d_in=32, hidden=128, depth=4, classes=10, outlier=1000.0) -> ov.Model:
    """Fixed random ReLU MLP with one huge hidden unit (layer 1) that the next layer reads with a tiny
    weight: per-tensor activation ranges and per-row weight scales both lose it."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, d_in], np.float32, name="x")
    h, d = x, d_in
    for i in range(depth):
        w = rng.standard_normal((hidden, d)) / np.sqrt(d) * np.sqrt(2)
        if i == 1:
            w[0] *= outlier
        if i == 2:
            w[:, 0] /= outlier
        h = ops.relu(ops.matmul(h, ops.constant(w.astype(np.float32), name=f"fc{i}/w"), False, True, name=f"fc{i}"),
                     name=f"relu{i}")
        d = hidden
    w = rng.standard_normal((classes, d)) / np.sqrt(d)
    y = ops.matmul(h, ops.constant(w.astype(np.float32), name="head/w"), False, True, name="head")
    return ov.Model([ops.result(y, name="logits")], [x], "outlier_classifier")


@pytest.fixture(scope="module")
def task():
    """Labels are FP32's argmax on validation inputs where FP32 is not near a tie (the 25% smallest
    top-1 margins are left out, as a real classifier is mostly confident)."""
    m = outlier_classifier()
    rng = np.random.default_rng(1)
    calib = list(rng.standard_normal((96, 1, 32)).astype(np.float32))
    val = rng.standard_normal((400, 1, 32)).astype(np.float32)
    cf = ov.Core().compile_model(m, "CPU", F32)
    logits = np.array([cf(v)[0][0] for v in val])
    top = np.sort(logits, 1)
    keep = (top[:, -1] - top[:, -2]) > np.quantile(top[:, -1] - top[:, -2], 0.25)
    return m, calib, list(zip(val[keep], logits[keep].argmax(1)))


def accuracy(compiled, data) -> float:
    return float(np.mean([int(np.argmax(compiled(x)[0])) == int(y) for x, y in data]))


def test_a_matmul_whose_input_goes_back_to_float_gets_its_float_weights_in_accuracy_control(task):
    """revert(whole_matmuls=True), as accuracy control reverts: fc2's input quantizer takes fc2's int8 weights
    with it (a float input beside int8 weights is a weight-decompressed product: rounding kept for no speed,
    and refused by the CPU plugin with oneDNN capped at AVX2); without it, only the named quantizer goes."""
    from ovquant.accuracy_control import revert
    from ovquant.sensitivity import find_quantizers

    m, calib, _ = task
    q = ovquant.quantize(m, calib, subset_size=64)
    names = {z["name"] for z in find_quantizers(q, m)}
    w = next(n for n in names if n.startswith("fc2/fq_weights"))
    a, b = q.clone(), q.clone()
    assert revert(a, ["relu1/fq_output_0"], m) == ["relu1/fq_output_0"]
    assert sorted(revert(b, ["relu1/fq_output_0"], m, whole_matmuls=True)) == sorted(["relu1/fq_output_0", w])
    assert {z["name"] for z in find_quantizers(b, m)} == names - {"relu1/fq_output_0", w}
    x = np.ones((1, 32), np.float32)
    c = ov.Core().compile_model(b, "CPU", F32)(x)[0]
    assert np.isfinite(c).all()


def test_reverts_few_quantizers_and_ends_within_max_drop(task):
    m, calib, val = task
    calls = []

    def counted(compiled, data):
        calls.append(1)
        return accuracy(compiled, data)

    vd = ovquant.Dataset(val, lambda item: item[0])
    plain = ovquant.quantize(m, calib, subset_size=64)
    assert accuracy(ov.Core().compile_model(plain, "CPU", F32), val) < 0.95      # quantization hurts
    q, rep = quantize_with_accuracy_control_report(m, calib, vd, counted, max_drop=0.01, subset_size=64)
    ac = rep["accuracy_control"]
    final = accuracy(ov.Core().compile_model(q, "CPU", F32), val)
    assert 1.0 - final <= 0.01 and ac["metric"] == pytest.approx(final) and ac["within_max_drop"]
    assert ac["metric_int8_full"] < 0.95 and ac["metric_fp32"] == 1.0
    assert 1 <= ac["n_reverted"] <= 3 < ac["n_quantizers"]
    assert ac["validation_runs"] == len(calls) <= 2 + 2 * 3            # fp32, int8, then O(log k) probes
    assert ac["ranking_samples_from"] == "held-back calibration"
    n_fq = sum(op.get_type_name() == "FakeQuantize" for op in q.get_ops())
    assert n_fq < sum(op.get_type_name() == "FakeQuantize" for op in plain.get_ops())
    json.dumps(rep, allow_nan=False)


def test_nncf_function_returns_the_model_and_relative_drop(task):
    m, calib, val = task
    q = ovquant.quantize_with_accuracy_control(m, calib, ovquant.Dataset(val, lambda it: it[0]), accuracy,
                                               max_drop=0.02, drop_type="relative", subset_size=64)
    assert isinstance(q, ov.Model)
    assert drop_of(1.0, accuracy(ov.Core().compile_model(q, "CPU", F32), val), "relative") <= 0.02
    assert drop_of(0.8, 0.7, "relative") == pytest.approx(0.125) and drop_of(0.8, 0.7, "absolute") == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="drop_type"):
        ovquant.quantize_with_accuracy_control(m, calib, val, accuracy, drop_type="percent")
    q2 = ovquant.quantize_with_accuracy_control(m, calib, val, accuracy, max_drop=1.0, subset_size=64,
                                                advanced_quantization_parameters=None,
                                                advanced_accuracy_restorer_parameters=None)   # NNCF's defaults
    assert isinstance(q2, ov.Model)
    with pytest.raises(ConfigError, match="^advanced_accuracy_restorer_parameters: NNCF's advanced"):
        ovquant.quantize_with_accuracy_control(m, calib, val, accuracy, advanced_accuracy_restorer_parameters=object())


def test_no_revert_when_already_within(task):
    m, calib, val = task
    q, rep = quantize_with_accuracy_control_report(m, calib, val, accuracy, max_drop=1.0, subset_size=64)
    ac = rep["accuracy_control"]
    assert ac["n_reverted"] == 0 and ac["validation_runs"] == 2 and not ac["ranked"]


def test_an_empty_validation_dataset_or_a_nan_fp32_metric_is_an_error_not_fp32(task):
    """Both used to end in the FP32 model, returned as if accuracy control had worked."""
    from ovquant.errors import DataError

    m, calib, val = task
    with pytest.raises(DataError, match="^validation_dataset: it is empty;"):
        ovquant.quantize_with_accuracy_control(m, calib, [], accuracy, subset_size=64)
    with pytest.raises(DataError, match="^validation_dataset: it is empty;"):
        ovquant.quantize_with_accuracy_control(m, calib, ovquant.Dataset([], lambda it: it[0]), accuracy, subset_size=64)
    with pytest.raises(ConfigError, match=r"^validation_fn: returned nan for the FP32 model; the metric must be a finite"):
        ovquant.quantize_with_accuracy_control(m, calib, val, lambda c, d: float("nan"), subset_size=64)


def test_a_nan_metric_for_a_quantized_candidate_counts_as_failing(task):
    m, calib, val = task
    calls = []

    def metric(compiled, data):
        calls.append(1)
        return float("nan") if len(calls) == 2 else accuracy(compiled, data)   # the full INT8 model

    q, rep = quantize_with_accuracy_control_report(m, calib, val, metric, max_drop=0.5, subset_size=64)
    ac = rep["accuracy_control"]
    assert ac["drop_int8_full"] == float("inf") and ac["ranked"] and ac["n_reverted"] >= 1
    assert ac["metric"] == ac["metric"] and ac["drop"] <= 0.5


def test_pot_config_with_a_python_metric(task):
    m, calib, val = task
    cfg = {"algorithms": [{"name": "AccuracyAwareQuantization",
                           "params": {"stat_subset_size": 64, "maximal_drop": 0.01, "metric": accuracy,
                                      "validation_data": ovquant.Dataset(val, lambda it: it[0])}}]}
    q, rep = ovquant.quantize_with_report(m, calib, cfg)
    assert rep["pipeline"][-1] == "AccuracyControl" and "MinMaxQuantization" in rep["pipeline"]
    entry = rep["algorithms"][-1]
    assert 1 <= entry["n_reverted"] <= 3 and "validation runs" in entry["summary"]
    assert 1.0 - accuracy(ov.Core().compile_model(q, "CPU", F32), val) <= 0.01


METRIC = '''
import numpy as np
def top1(compiled, path):
    z = np.load(path)
    return float(np.mean([int(np.argmax(compiled(x)[0])) == int(y) for x, y in zip(z["input:x"], z["label"])]))
'''


def test_pot_config_file_on_the_cli(task, tmp_path):
    m, calib, val = task
    ov.save_model(m, str(tmp_path / "m.xml"), compress_to_fp16=False)
    np.save(tmp_path / "calib.npy", np.stack(calib))
    np.savez(tmp_path / "val.npz", **{"input:x": np.stack([v for v, _ in val]), "label": np.array([y for _, y in val])})
    (tmp_path / "mymetric.py").write_text(METRIC)
    cfg = {"model": {"model_name": "m", "model": "m.xml"}, "engine": {"data_source": "calib.npy"},
           "compression": {"algorithms": [{"name": "AccuracyAwareQuantization", "params": {
               "stat_subset_size": 64, "maximal_drop": 0.01, "metric": "mymetric:top1",
               "validation_data": str(tmp_path / "val.npz")}}]}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), ENV.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "ovquant.cli", "quantize", "-c", str(tmp_path / "c.json"), "-o",
                        str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "out" / "m.report.json").read_text())
    entry = rep["algorithms"][-1]
    assert entry["name"] == "AccuracyControl" and entry["within_max_drop"] and entry["validation_runs"] >= 3
    cfg["compression"]["algorithms"][0]["params"]["metric"] = "mymetric:nope"
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    bad = subprocess.run([sys.executable, "-m", "ovquant.cli", "quantize", "-c", str(tmp_path / "c.json"), "-o",
                          str(tmp_path / "o2")], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "compression.algorithms[0].params.metric" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0


def _lstm_net(seed=0, t=6, i=8, h=16, r_scale=1.0):
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, t, i], np.float32, name="x")
    pre = ops.relu(ops.matmul(x, ops.constant(rng.normal(0, 0.3, (i, i)).astype(np.float32)), False, False), name="pre")
    # the initial state is computed (as in exported recognizers): with a constant one the CPU runs the LSTM
    # in f32 and the target leaves it unquantized (requires_activations)
    h0 = ops.matmul(ops.reduce_mean(pre, ops.constant(np.array([1], np.int64)), True),
                    ops.constant(rng.normal(0, 0.3, (i, h)).astype(np.float32)), False, False)
    c0 = ops.constant(np.zeros((1, 1, h), np.float32))
    lens = ops.constant(np.array([t], np.int32))
    w = ops.constant(rng.normal(0, 0.3, (1, 4 * h, i)).astype(np.float32))
    r = ops.constant((r_scale * rng.normal(0, 0.3, (1, 4 * h, h))).astype(np.float32))
    b = ops.constant(rng.normal(0, 0.1, (1, 4 * h)).astype(np.float32))
    seq = ops.lstm_sequence(pre, h0, c0, lens, w, r, b, h, "forward", name="lstm")
    y = ops.matmul(ops.squeeze(seq.output(0), ops.constant(np.array([1], np.int64))),
                   ops.constant(rng.normal(0, 0.3, (h, 4)).astype(np.float32)), False, False, name="head")
    return ov.Model([ops.result(y)], [x])


def test_reverting_one_quantizer_of_a_recurrent_op_reverts_them_all_and_the_model_compiles():
    """The CPU plugin refuses an LSTMSequence whose weights stay int8 while one of its inputs went back
    to float; revert puts such an op back to float whole."""
    from ovquant.accuracy_control import find_quantizers, revert

    m = _lstm_net()
    rng = np.random.default_rng(1)
    q = ovquant.quantize(m.clone(), [{"x": rng.normal(0, 1, (1, 6, 8)).astype(np.float32)} for _ in range(16)])
    found = find_quantizers(q, m)
    on_lstm = {qz["name"] for qz in found
               if any(r.get_node().get_friendly_name() == "lstm" for r in qz["quantized"].get_target_inputs())}
    assert len(on_lstm) >= 2, on_lstm            # the LSTM's input and its weights are quantized
    first = sorted(on_lstm)[0]
    done = revert(q, [first], m)
    assert set(done) == on_lstm, (done, on_lstm)
    ov.Core().compile_model(q, "CPU", F32)            # raises if the plugin refuses it
    lstm = next(op for op in q.get_ops() if op.get_friendly_name() == "lstm")
    assert all(lstm.input_value(p).get_node().get_type_name() == "Constant" for p in (4, 5))
    ref = next(op for op in m.get_ops() if op.get_friendly_name() == "lstm")
    for p in (4, 5):   # back to float whole: the FP32 model's weights, not their int8 values
        np.testing.assert_array_equal(lstm.input_value(p).get_node().get_data(), ref.input_value(p).get_node().get_data())


def test_a_reverted_recurrent_op_gets_the_fp32_weights_even_where_the_twin_search_fails():
    """With R 20x W, W is quantized on R's (shared) scale and its int8 value is too far from W for the
    twin search (5% tolerance): the op goes back to float whole all the same, so revert gives it the FP32
    model's W and R by the op's name, not their int8 values."""
    from ovquant.accuracy_control import find_quantizers, revert

    m = _lstm_net(r_scale=20.0)
    rng = np.random.default_rng(1)
    q = ovquant.quantize(m.clone(), [{"x": rng.normal(0, 1, (1, 6, 8)).astype(np.float32)} for _ in range(16)])
    found = find_quantizers(q, m)
    reads = lambda qz, port: any(r.get_node().get_friendly_name() == "lstm" and r.get_index() == port
                                 for r in qz["quantized"].get_target_inputs())
    assert not [qz for qz in found if reads(qz, 4)]   # W: no twin found
    revert(q, [next(qz["name"] for qz in found if reads(qz, 0))], m)
    lstm, ref = (next(op for op in x.get_ops() if op.get_friendly_name() == "lstm") for x in (q, m))
    for p in (4, 5):
        np.testing.assert_array_equal(lstm.input_value(p).get_node().get_data(), ref.input_value(p).get_node().get_data())
    ov.Core().compile_model(q, "CPU", F32)


def test_a_recurrent_op_whose_int8_weights_have_no_float_twin_gets_them_as_constants():
    """Without the FP32 model (or where its twin is not found, as on ocr-common's LSTM) revert cannot put
    a compressed weight back to its float value; the sequence op then gets the dequantized weight as a
    Constant, so the CPU plugin still takes it (it refused "expects Constant for port 5")."""
    from ovquant.accuracy_control import find_quantizers, revert
    from ovquant.float_twin import dequantized

    m = _lstm_net()
    rng = np.random.default_rng(1)
    q = ovquant.quantize(m.clone(), [{"x": rng.normal(0, 1, (1, 6, 8)).astype(np.float32)} for _ in range(16)])
    lstm = next(op for op in q.get_ops() if op.get_friendly_name() == "lstm")
    assert lstm.input_value(4).get_node().get_type_name() == "Multiply"      # int8 weights, decompressed
    want = {p: dequantized(lstm.input_value(p)) for p in (4, 5)}
    (act,) = [qz["name"] for qz in find_quantizers(q) if qz["kind"] == "activations" and any(
        r.get_node().get_friendly_name() == "lstm" and r.get_index() == 0 for r in qz["quantized"].get_target_inputs())]
    assert act in revert(q, [act])        # with its sequence peers (the initial state's quantizer)
    for p in (4, 5):
        node = lstm.input_value(p).get_node()
        assert node.get_type_name() == "Constant"
        np.testing.assert_allclose(node.get_data(), want[p], rtol=1e-6, atol=1e-7)
    r = ov.Core().compile_model(q, "CPU", F32)({"x": np.ones((1, 6, 8), np.float32)})[0]   # raises if refused
    assert np.all(np.isfinite(r))


def test_a_validation_fn_that_raises_is_one_line_naming_it(task):
    m, calib, val = task

    def broken_metric(compiled, data):
        return 1 / 0

    with pytest.raises(ConfigError, match=r"^validation_fn .*broken_metric: raised ZeroDivisionError: division by zero$"):
        ovquant.quantize_with_accuracy_control(m, calib, val, broken_metric, subset_size=64)
