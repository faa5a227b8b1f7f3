"""What POT and NNCF users hand ovquant every day, run as they would: the installed CLI in a subprocess
(stderr as the user sees it), and the Python API with NNCF's habits."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
import tflite_model
import ovquant
from ovquant.demo import load_demo

ENV = {**os.environ, "OVQUANT_DISABLE_PLUGIN_AUTOLOAD": "1", "OVQUANT_CACHE_DIR": ""}


def cli(*argv, env=None, timeout=300) -> subprocess.CompletedProcess:
    exe = shutil.which("ovquant") or sys.executable
    cmd = [exe] if exe.endswith("ovquant") else [exe, "-m", "ovquant.cli"]
    return subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=True, env=env or ENV,
                          timeout=timeout)


def fq_count(xml) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(xml)).get_ops())


def report(out, name) -> dict:
    return json.loads((out / f"{name}.report.json").read_text())


def corrected_layers(rep) -> int:
    return sum(a.get("n_corrected", 0) for a in rep["algorithms"])


# ---- ONNX and TFLite are placed like IR ----------------------------------------------------------------
def _five_conv_onnx(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, c_in, x = [], [], 3, "image"
    for i, c in enumerate([8, 8, 16, 16, 8]):
        w = (rng.standard_normal((c, c_in, 3, 3)) / np.sqrt(c_in * 9)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x, c_in = f"r{i}", c
    inits.append(numpy_helper.from_array((rng.standard_normal((8, 10)) * 0.3).astype(np.float32), "fcw"))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("MatMul", ["flat", "fcw"], ["logits"], name="fc")]
    g = helper.make_graph(nodes, "five_conv", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    d = tmp_path_factory.mktemp("five")
    _five_conv_onnx(d / "five.onnx")
    ov.save_model(ov.convert_model(str(d / "five.onnx")), str(d / "five_ir.xml"), compress_to_fp16=False)
    rng = np.random.default_rng(1)
    np.save(d / "data.npy", rng.standard_normal((40, 1, 3, 16, 16)).astype(np.float32))
    return d


def test_onnx_file_and_its_ir_get_the_same_quantizers_and_corrected_layers(five, tmp_path):
    runs = {}
    for name in ("five.onnx", "five_ir.xml"):
        out = tmp_path / name.replace(".", "_")
        p = cli("quantize", "-m", five / name, "--data", five / "data.npy", "-o", out, "-n", "q", "--no-progress")
        assert p.returncode == 0, p.stderr
        runs[name] = (fq_count(out / "q.xml"), corrected_layers(report(out, "q")))
    assert runs["five.onnx"] == runs["five_ir.xml"], runs
    n_fq, n_corrected = runs["five.onnx"]
    assert n_fq == 7 and n_corrected == 5, runs     # one quantizer per conv/FC input (+ the 5 conv weights compressed)


def test_tflite_writer_gives_the_numpy_function(tmp_path):
    """The test model below is what tests/tflite_model.py says it is (FP16 weights behind DEQUANTIZE)."""
    w = tflite_model.write_tflite_cnn(str(tmp_path / "cnn.tflite"), seed=0, hw=16)
    m = ov.convert_model(str(tmp_path / "cnn.tflite"))
    assert "Convert" in {op.get_type_name() for op in m.get_ops()}      # the FP16 weight's decompression
    x = np.random.default_rng(1).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    c = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.concatenate([c(x[i:i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(got, tflite_model.numpy_reference(x, w), rtol=1e-4, atol=1e-5)


def test_tflite_file_and_its_ir_get_the_same_quantizers(tmp_path):
    tflite_model.write_tflite_cnn(str(tmp_path / "cnn.tflite"), seed=0, hw=16)
    ov.save_model(ov.convert_model(str(tmp_path / "cnn.tflite")), str(tmp_path / "cnn_ir.xml"), compress_to_fp16=False)
    rng = np.random.default_rng(2)
    np.save(tmp_path / "data.npy", rng.uniform(-1, 1, (30, 1, 16, 16, 3)).astype(np.float32))
    got = {}
    for name in ("cnn.tflite", "cnn_ir.xml"):
        out = tmp_path / name.replace(".", "_")
        p = cli("quantize", "-m", tmp_path / name, "--data", tmp_path / "data.npy", "-o", out, "-n", "q",
                "--no-progress")
        assert p.returncode == 0, p.stderr
        int8_weights = sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
                           for op in ov.Core().read_model(str(out / "q.xml")).get_ops())
        got[name] = (fq_count(out / "q.xml"), int8_weights, corrected_layers(report(out, "q")))
    # three activation quantizers (the input, both ReLUs) and three int8 weights, the FP16 one among them
    assert got["cnn.tflite"] == got["cnn_ir.xml"] and got["cnn.tflite"][:2] == (3, 3), got


def test_a_file_openvino_cannot_read_is_one_line(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    np.save(tmp_path / "d.npy", np.zeros((2, 3), np.float32))
    p = cli("quantize", "-m", tmp_path / "m.onnx", "--data", tmp_path / "d.npy", "-o", tmp_path / "o")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"ovquant: error: {tmp_path / 'm.onnx'}: cannot read the model"), p.stderr


# ---- never a broken model ------------------------------------------------------------------------------
def _reciprocal_model(d):
    """out = 1 / conv1x1(x): finite in FP32 on inputs of about 0.001, but an input quantizer whose range
    reaches 1000 rounds them to 0, so the INT8 model divides by zero. The 20 calibration samples (5 to 10) pass
    the check of every returned model (core/run_check.py); the CLI's check on held-back samples catches the rest."""
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    w = ops.constant(np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1))
    c = ops.convolution(x, w, [1, 1], [0, 0], [0, 0], [1, 1], name="conv")
    y = ops.divide(ops.constant(np.float32(1.0)), c, name="recip")
    ov.save_model(ov.Model([ops.result(y, name="out")], [x], "recip"), str(d / "recip.xml"), compress_to_fp16=False)
    data = np.random.default_rng(0).uniform(0.001, 0.002, (40, 1, 4, 8, 8)).astype(np.float32)
    data[:20] = np.random.default_rng(1).uniform(5.0, 10.0, (20, 1, 4, 8, 8))
    data[:, 0, 0, 0, 0] = 1000.0
    np.save(d / "recip.npy", data)


def test_a_non_finite_int8_model_is_refused_and_the_earlier_output_stays(tmp_path):
    _reciprocal_model(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"recip.xml": b"<earlier xml/>", "recip.bin": b"\x00earlier", "recip.report.json": b"{}"}
    for name, blob in earlier.items():
        (out / name).write_bytes(blob)
    # the earlier files were not written by ovquant: --overwrite lets it replace them (once the check passes)
    p = cli("quantize", "-m", tmp_path / "recip.xml", "--data", tmp_path / "recip.npy", "-o", out, "--no-progress",
            "--overwrite", "--subset-size", "20")
    err = [l for l in p.stderr.splitlines() if not l.startswith("ovquant: warning:")]
    assert p.returncode == 1, p.stderr
    assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    assert err[0].startswith("ovquant: error: output 'out' is not finite on"), err
    assert {n: (out / n).read_bytes() for n in earlier} == earlier
    assert sorted(os.listdir(out)) == sorted(earlier)
    forced = cli("quantize", "-m", tmp_path / "recip.xml", "--data", tmp_path / "recip.npy", "-o", out,
                 "--no-progress", "--force", "--overwrite", "--subset-size", "20")
    assert forced.returncode == 0, forced.stderr
    assert "written because of --force" in forced.stdout
    rep = report(out, "recip")
    assert rep["output_check"]["forced"] and "not finite" in rep["output_check"]["problem"]
    json.loads((out / "recip.report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


def test_output_error_is_measured_on_held_back_samples(tmp_path):
    m = models.conv_net()
    ov.save_model(m, str(tmp_path / "m.xml"), compress_to_fp16=False)
    np.save(tmp_path / "d.npy", np.concatenate(models.random_samples(m, 30)))
    p = cli("quantize", "-m", tmp_path / "m.xml", "--data", tmp_path / "d.npy", "--subset-size", "20",
            "-o", tmp_path / "o", "--no-progress")
    assert p.returncode == 0, p.stderr
    rep = report(tmp_path / "o", "m")
    assert rep["output_check"]["samples"] == "held back" and rep["output_error"][0]["samples"] == 8
    assert "on 8 held back samples" in p.stdout and "quantizers (" in p.stdout and "slowest stage" in p.stdout
    assert rep["versions"]["openvino"] == ov.get_version() and rep["versions"]["ovquant"] == ovquant.__version__
    assert rep["settings"]["stat_subset_size"] == 20 and rep["settings"]["steps"], rep["settings"]
    assert rep["settings"]["data"] == str(tmp_path / "d.npy")
    sentences = {a["name"]: a["summary"] for a in rep["algorithms"]}
    assert sentences["MinMaxQuantization"].startswith(f"placed {fq_count(tmp_path / 'o' / 'm.xml') + 4} FakeQuantize")
    assert sentences["FastBiasCorrection"].startswith("corrected the bias of 4 of 4"), sentences


# ---- image folders as POT reads them -----------------------------------------------------------------
def _demo_folder(d, n):
    from PIL import Image

    blobs = np.load(os.path.join(os.path.dirname(ovquant.__file__), "data", "demo_data.npz"))
    pixels, labels = blobs["images"], blobs["labels"]
    for i in range(n):
        sub = d / f"class_{int(labels[i])}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i].astype(np.uint8)).save(sub / f"{i:04d}.png")
    return float(blobs["mean"]), float(blobs["std"])


def _top1(model, images, labels) -> float:
    c = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    r = c.create_infer_request()
    return float(np.mean([np.argmax(r.infer({0: im[None]})[0]) == y for im, y in zip(images, labels)]))


def test_demo_model_calibrated_from_a_folder_of_its_own_images_keeps_its_accuracy(tmp_path):
    mean, std = _demo_folder(tmp_path / "images", 300)
    data = os.path.join(os.path.dirname(ovquant.__file__), "data")
    shutil.copy(os.path.join(data, "demo_cnn.xml"), tmp_path / "demo.xml")
    shutil.copy(os.path.join(data, "demo_cnn.bin"), tmp_path / "demo.bin")
    plain = cli("quantize", "-m", tmp_path / "demo.xml", "--data", tmp_path / "images", "-o", tmp_path / "raw",
                "--no-progress", "--force")
    assert "give --mean-values/--scale-values" in plain.stderr, plain.stderr
    p = cli("quantize", "-m", tmp_path / "demo.xml", "--data", tmp_path / "images", "-o", tmp_path / "norm",
            "--mean-values", str(255 * mean), "--scale-values", str(255 * std), "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "--mean-values" not in p.stderr, p.stderr
    fp32, images, labels, _ = load_demo()
    q = ov.Core().read_model(str(tmp_path / "norm" / "demo.xml"))
    a_fp32, a_q = _top1(fp32, images, labels), _top1(q, images, labels)
    assert abs(a_q - a_fp32) <= 0.005, (a_q, a_fp32)
    assert report(tmp_path / "norm", "demo")["settings"]["images"].startswith("BGR")


def test_a_broken_image_is_the_one_line_even_where_a_preprocessing_warning_applies(tmp_path):
    """The demo CNN has no scaling of its own, so plain pixels get a warning; it came before the error of a
    broken image, making two lines. The warning now follows a run that read every image."""
    _demo_folder(tmp_path / "imgs", 6)
    (tmp_path / "imgs" / "class_0").mkdir(exist_ok=True)
    (tmp_path / "imgs" / "class_0" / "broken.jpg").write_bytes(b"not a jpeg")
    xml = os.path.join(os.path.dirname(ovquant.__file__), "data", "demo_cnn.xml")
    p = cli("quantize", "-m", xml, "--data", tmp_path / "imgs", "-o", tmp_path / "o", "--no-progress")
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"ovquant: error: {tmp_path / 'imgs' / 'class_0' / 'broken.jpg'}: cannot read image: cannot identify image "
        f"file '{tmp_path / 'imgs' / 'class_0' / 'broken.jpg'}'"], p.stderr
    (tmp_path / "imgs" / "class_0" / "broken.jpg").unlink()
    p = cli("quantize", "-m", xml, "--data", tmp_path / "imgs", "-o", tmp_path / "o", "--no-progress")
    assert p.returncode == 0 and "images are fed as 0..255 pixels" in p.stderr, p.stderr


def test_image_folder_reads_bgr_and_class_subfolders_and_dynamic_batch(tmp_path):
    from PIL import Image

    from ovquant.dataset import ImageOptions, open_source

    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "c").mkdir(parents=True)
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0] = 200   # red
    Image.fromarray(rgb).save(tmp_path / "a" / "1.png")
    Image.fromarray(rgb).save(tmp_path / "b" / "c" / "2.png")
    x = ops.parameter(ov.PartialShape([-1, 3, 6, 5]), np.float32, name="img")
    m = ov.Model([ops.result(ops.relu(x))], [x])
    bgr = list(open_source(str(tmp_path), list(m.inputs)))
    assert len(bgr) == 2 and bgr[0].shape == (1, 3, 6, 5)
    assert bgr[0][0, 2].max() == 200 and bgr[0][0, 0].max() == 0      # BGR: red is channel 2
    rgb_in = list(open_source(str(tmp_path), list(m.inputs), ImageOptions(reverse_input_channels=True,
                                                                           mean_values=(100.0,), scale_values=(2.0,))))
    np.testing.assert_allclose(rgb_in[0][0, 0], 50.0)                   # (200 - 100) / 2 in channel 0 (R)
    np.testing.assert_allclose(rgb_in[0][0, 1], -50.0)
    x4 = ops.parameter([1, 6, 5, 4], np.uint8, name="rgba")
    m4 = ov.Model([ops.result(ops.convert(x4, "f32"))], [x4])
    rgba = list(open_source(str(tmp_path), list(m4.inputs)))
    assert rgba[0].shape == (1, 6, 5, 4) and rgba[0].dtype == np.uint8 and rgba[0][0, ..., 3].min() == 255
    x5 = ops.parameter([1, 5, 6, 5], np.float32, name="five_channels")
    with pytest.raises(ovquant.OVQuantError, match="has 5 channels"):
        open_source(str(tmp_path), list(ov.Model([ops.result(ops.relu(x5))], [x5]).inputs))


# ---- NNCF's habits -------------------------------------------------------------------------------------
def test_nncf_keywords_and_a_model_path(tmp_path):
    m = models.conv_net()
    ov.save_model(m, str(tmp_path / "m.xml"), compress_to_fp16=False)
    samples = models.random_samples(m, 12)
    q, rep = ovquant.quantize_with_report(str(tmp_path / "m.xml"), samples, subset_size=10, target_device="CPU",
                                          fast_bias_correction=None, model_type=None,
                                          ignored_scope={"names": ["conv2"], "types": ["GroupConvolution"]})
    assert rep["settings"]["stat_subset_size"] == 10 and rep["target_device"] == "CPU"
    assert not any("bias" in s["name"].lower() for s in rep["settings"]["steps"]), rep["pipeline"]
    consumers = {c for a in rep["algorithms"] for qz in a.get("quantizers", []) for c in qz["consumers"]}
    assert not any(c.startswith(("conv2:", "conv2/", "dwconv:")) for c in consumers), consumers
    with pytest.raises(ovquant.OVQuantError, match="^fast_bias_correction: False"):
        ovquant.quantize(m, samples, fast_bias_correction=False)
    with pytest.raises(ovquant.OVQuantError, match="^no_such_keyword: unknown parameter"):
        ovquant.quantize(m, samples, no_such_keyword=1)
    with pytest.raises(ovquant.OVQuantError, match="^model: expected an openvino.Model"):
        ovquant.quantize(42, samples)
    with pytest.raises(ovquant.OVQuantError, match="no such model file"):
        ovquant.quantize(str(tmp_path / "missing.xml"), samples)


class IgnoredScope:
    """What ``nncf.IgnoredScope`` holds (its attributes, NNCF's defaults)."""

    def __init__(self, names=(), patterns=(), types=(), subgraphs=(), validate=True):
        self.names, self.patterns, self.types, self.subgraphs = list(names), list(patterns), list(types), list(subgraphs)
        self.validate = validate


def _quantized_layers(rep) -> set:
    return {c.split(":")[0] for a in rep["algorithms"] for qz in a.get("quantizers", []) for c in qz["consumers"]}


def test_nncf_ignored_scope_patterns_match_at_the_start_and_validate_refuses_what_matches_nothing():
    """NNCF: a pattern is ``re.match`` (anchored at the start only), and ``validate=True`` (its default) makes
    a name, pattern or type that matches no node an error."""
    m = models.conv_net()
    samples = models.random_samples(m, 8)
    _, rep = ovquant.quantize_with_report(m, samples, ignored_scope=IgnoredScope(patterns=["conv"]))
    assert not _quantized_layers(rep) & {"conv1", "conv2"} and {"dwconv", "fc"} <= _quantized_layers(rep)
    _, rep = ovquant.quantize_with_report(m, samples, ignored_scope={"patterns": ["(?i)DW"]})
    assert "dwconv" not in _quantized_layers(rep) and "conv1" in _quantized_layers(rep)
    for scope, what in ((IgnoredScope(patterns=["onv1"]), "ignored.patterns[0] 'onv1'"), (IgnoredScope(names=["conv9"]), "'conv9'"),
                        ({"types": ["LSTMSequence"]}, "type 'LSTMSequence'")):
        with pytest.raises(ovquant.errors.ConfigError) as info:
            ovquant.quantize(m, samples, ignored_scope=scope)
        assert what in str(info.value) and str(info.value).endswith(
            "matched no node (ignored scope validate=True; validate=False makes this a warning)"), str(info.value)
    with pytest.warns(UserWarning, match="'conv9' matched no node$"):
        ovquant.quantize(m, samples, ignored_scope=IgnoredScope(names=["conv9"], validate=False))
    with pytest.raises(ovquant.errors.ConfigError, match=r"^ignored_scope.patterns\[0\]: '\(' is not a regular expression"):
        ovquant.quantize(m, samples, ignored_scope=IgnoredScope(patterns=["("]))
    with pytest.raises(ovquant.errors.ConfigError, match=r"^DefaultQuantization.params.ignored.patterns\[0\]: '\(' is not"):
        ovquant.quantize(m, samples, {"ignored": {"patterns": ["("]}})


@pytest.mark.parametrize("kw,msg", [
    ({"subset_size": 10.0}, "subset_size: expected an integer, got 10.0"),
    ({"subset_size": "10"}, "subset_size: expected an integer, got '10'"),
    ({"subset_size": True}, "subset_size: expected an integer, got True"),
    ({"stat_subset_size": "7"}, "stat_subset_size: expected an integer, got '7'"),
    ({"seed": 1.5}, "seed: expected an integer, got 1.5"),
    ({"shuffle_data": "yes"}, "shuffle_data: expected True or False, got 'yes'"),
    ({"skip_slow_int8": "yes"}, "skip_slow_int8: expected True or False, got 'yes'"),
    ({"target_device": 5}, "target_device: expected a string, got 5"),
    ({"model_type": 1}, "model_type: expected a string, got 1"),
    ({"preset": 3}, "preset: expected a string, got 3"),
    ({"ignored": {"scope": "conv1"}}, "ignored.scope: expected a list, got 'conv1'"),
    ({"pipeline": "MinMaxQuantization"}, "pipeline: expected a list of algorithm names, got 'MinMaxQuantization'"),
    ({"pipeline": []}, "pipeline: the list is empty; name at least one algorithm"),
])
def test_keyword_overrides_are_checked_as_strictly_as_a_config_file(kw, msg):
    """A keyword of the wrong type is the one-line ConfigError a config file gets, naming the keyword."""
    m = models.conv_net()
    with pytest.raises(ovquant.errors.ConfigError) as info:
        ovquant.quantize(m, models.random_samples(m, 4), **kw)
    assert str(info.value) == msg


def test_an_unknown_pipeline_algorithm_is_a_config_error_listing_the_known():
    m = models.conv_net()
    with pytest.raises(ovquant.errors.ConfigError, match=r"^pipeline\[1\]: unknown algorithm 'Nope' \(known: .*MinMaxQuantization"):
        ovquant.quantize(m, models.random_samples(m, 4), pipeline=["MinMaxQuantization", "Nope"])


def test_quantize_takes_300_samples_by_default_as_nncf_and_a_config_still_rules(tmp_path):
    m = models.conv_net()
    samples = models.random_samples(m, 310)
    _, rep = ovquant.quantize_with_report(m, samples)
    assert rep["stages"][0]["n_samples"] == 300 and rep["settings"]["stat_subset_size"] == 300
    _, rep = ovquant.quantize_with_report(m, samples, subset_size=305)
    assert rep["stages"][0]["n_samples"] == 305
    _, rep = ovquant.quantize_with_report(m, samples, config={"preset": "mixed", "stat_subset_size": 7})
    assert rep["stages"][0]["n_samples"] == 7


def test_two_keys_for_one_input_and_an_unfed_input_are_errors():
    m = models.int_input_net()
    x = {"input_ids": np.zeros((1, 5), np.int64)}
    with pytest.raises(ovquant.OVQuantError, match="both feed input 'input_ids'"):
        ovquant.quantize(m, [{"input_ids": x["input_ids"], "input:input_ids": x["input_ids"]}])


def test_dir_lists_the_public_api():
    names = dir(ovquant)
    for name in ("quantize", "quantize_with_report", "Dataset", "ImageOptions", "OVQuantError", "read_model"):
        assert name in names and getattr(ovquant, name) is not None


# ---- the console ---------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux 'script' is needed for a pseudo-terminal")
def test_progress_bar_fits_80_columns_with_count_rate_and_eta(tmp_path):
    m = models.big_conv_net(hw=40, c=64)
    ov.save_model(m, str(tmp_path / "big.xml"), compress_to_fp16=False)
    np.save(tmp_path / "big.npy", np.concatenate(models.random_samples(m, 300)))
    exe = shutil.which("ovquant")
    cmd = f"stty cols 80 rows 24; {exe} quantize -m big.xml --data big.npy -o out --no-cache"
    p = subprocess.run(["script", "-qfec", cmd, str(tmp_path / "typescript")], cwd=tmp_path, env=ENV,
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:]
    screen = (tmp_path / "typescript").read_bytes().decode("utf-8", "replace").replace("\r", "\n")
    bars = [l for l in screen.splitlines() if l.startswith("pass 1") and "/300 [" in l]
    assert bars, screen[-3000:]
    assert all(len(l.rstrip()) <= 80 for l in bars), max(bars, key=len)
    last = bars[-1]
    assert "samples/s" in last and "<" in last.split("[")[1], last            # rate, elapsed<remaining
    assert "statistics pass 1:" in screen and "saved" in screen


def test_without_a_terminal_each_pass_is_one_line(tmp_path):
    m = models.conv_net()
    ov.save_model(m, str(tmp_path / "m.xml"), compress_to_fp16=False)
    np.save(tmp_path / "d.npy", np.concatenate(models.random_samples(m, 20)))
    p = cli("quantize", "-m", tmp_path / "m.xml", "--data", tmp_path / "d.npy", "-o", tmp_path / "o",
            "--subset-size", "20")
    assert p.returncode == 0, p.stderr
    assert [l for l in p.stderr.splitlines() if l.startswith("statistics pass 1: ")], p.stderr
    assert "\r" not in p.stderr


def test_version_help_and_usage_errors():
    v = cli("--version")
    assert v.returncode == 0 and v.stdout.strip() == f"ovquant {ovquant.__version__}"
    for sub in ("quantize", "plugins", "inspect", "demo"):
        h = cli(sub, "--help")
        assert h.returncode == 0 and "usage:" in h.stdout
        body = h.stdout.split("\n\n")
        assert len(body) > 2 and body[1].strip(), h.stdout     # a description under the usage line
    bad = cli("quantize", "--no-such-flag")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("ovquant: error:"), bad.stderr
    for argv in (("-o", ""), ("--target", ""), ("-n", "a\nb")):
        p = cli("quantize", "-m", "x.xml", "--data", "x.npy", *argv)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, (argv, p.stderr)
    p = cli("quantize", "-m", "x.xml", "--data", "x.npy", "--target", "xpu")   # named as given, not as a params path
    assert p.returncode == 2 and p.stderr.startswith("ovquant: error: --target: unknown target device 'xpu' (known: "), p.stderr


def test_a_config_may_not_name_a_statistic_as_a_range_estimator(tmp_path):
    from ovquant.config import config_from_dict

    cfg = {"model": {"model_name": "m", "model": "m.xml"}, "engine": {"data_source": "d.npy"},
           "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {
               "activations": {"range_estimator": {"max": {"type": "input_gram"}}}}}]}}
    with pytest.raises(ovquant.OVQuantError, match=r"^compression\.algorithms\[0\]\.params\.activations\.range_estimator"
                                                   r"\.max\.type: 'input_gram' is a statistic for algorithms"):
        config_from_dict(cfg)


def test_a_second_ctrl_c_does_not_break_the_clean_exit(tmp_path):
    import signal
    import time

    m = models.big_conv_net(hw=32, c=64)
    ov.save_model(m, str(tmp_path / "m.xml"), compress_to_fp16=False)
    np.save(tmp_path / "d.npy", np.concatenate(models.random_samples(m, 1000)))
    cache = tmp_path / "cache"
    p = subprocess.Popen([shutil.which("ovquant"), "quantize", "-m", tmp_path / "m.xml", "--data", tmp_path / "d.npy",
                          "--subset-size", "1000", "-o", tmp_path / "o", "--no-progress"],
                         env={**ENV, "OVQUANT_CACHE_DIR": str(cache)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while p.poll() is None and time.time() < deadline and not any(f.is_file() for f in cache.rglob("*")):
        time.sleep(0.01)        # the statistics pass writes its rows to the cache as it goes
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(signal.SIGINT)
    time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert err.splitlines() == ["ovquant: interrupted"], err
    assert not (tmp_path / "o").exists()


def test_reading_a_framework_file_sends_no_telemetry(tmp_path):
    """openvino.convert_model would send usage telemetry (a child process that waits on the network and,
    offline, prints a traceback); ovquant's read_model converts without it, CI variable or not."""
    pytest.importorskip("openvino_telemetry")
    tflite_model.write_tflite_cnn(str(tmp_path / "cnn.tflite"))
    code = ("import os, openvino_telemetry as t; from ovquant.io import read_model\n"
            f"read_model({str(tmp_path / 'cnn.tflite')!r})\n"
            "print(t.Telemetry().consent, os.environ.get('CI'))")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["HOME"] = str(tmp_path)     # no opt-out file of this machine's user
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "None"], p.stdout     # nothing sent, and the caller's CI left unset


def _packed_4bit(values: np.ndarray, et) -> ov.Tensor:
    """``values`` as OpenVINO stores a 4-bit tensor: two per byte, the first in the low nibble."""
    t = ov.Tensor(et, ov.Shape(list(values.shape)))
    u = (values.astype(np.int16) & 0xF).astype(np.uint8).ravel()
    t.data[:] = (u[0::2] | (u[1::2] << 4)).astype(np.uint8).view(t.data.dtype)
    return t


def test_inspect_reads_4_bit_weights_as_their_values(tmp_path):
    """An NNCF-style weight-compressed IR (i4 and u4 constants, Convert, Multiply): ``ovquant inspect`` gives
    each its kind and its real integer range (the packed bytes read as int8 gave [-110, 127])."""
    rng = np.random.default_rng(0)
    w_i4 = rng.integers(-8, 8, (16, 8)).astype(np.int8)
    w_u4 = rng.integers(0, 16, (8, 4)).astype(np.int8)
    x = ops.parameter([1, 16], np.float32, name="x")
    h = x
    for name, w, et in (("fc1", w_i4, ov.Type.i4), ("fc2", w_u4, ov.Type.u4)):
        deq = ops.multiply(ops.convert(ops.constant(_packed_4bit(w, et), name=f"{name}/w"), ov.Type.f32),
                           ops.constant(np.float32(0.05)))
        h = ops.matmul(h, deq, False, False, name=name)
    ov.save_model(ov.Model([h], [x]), str(tmp_path / "w4.xml"), compress_to_fp16=False)
    out = cli("inspect", tmp_path / "w4.xml")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].endswith(": 0 FakeQuantize, 0 int8 weight constants, 2 int4 weight constants"), lines[0]
    assert any(re.search(rf"int4 weights fc1/w  i4  int \[{w_i4.min()}, {w_i4.max()}\]  -> MatMul fc1$", ln)
               for ln in lines), lines
    assert any(re.search(rf"int4 weights fc2/w  u4  int \[{w_u4.min()}, {w_u4.max()}\]  -> MatMul fc2$", ln)
               for ln in lines), lines


def _mlp(tmp_path, x_first_nan=False):
    """x [1, 16] -> MatMul -> ReLU -> MatMul, saved as m.xml."""
    r = np.random.default_rng(0)
    x = ops.parameter([1, 16], np.float32, name="x")
    h = ops.relu(ops.matmul(x, ops.constant((r.standard_normal((16, 32)) * 0.3).astype(np.float32)), False, False,
                            name="fc1"), name="h")
    y = ops.matmul(h, ops.constant((r.standard_normal((32, 8)) * 0.3).astype(np.float32)), False, False, name="fc2")
    ov.save_model(ov.Model([y], [x], "m"), str(tmp_path / "m.xml"), compress_to_fp16=False)
    return r.standard_normal((30, 1, 16)).astype(np.float32)


def test_calibration_data_with_nan_warns_naming_the_input_and_all_nan_is_an_error(tmp_path):
    """One NaN in one sample: the CPU's in-graph ReduceMax skipped it silently (no warning, while an Inf
    warned); NaN everywhere gave ranges of [0, 8e-05] and exit 0 (ReduceMax gives -FLT_MAX there)."""
    data = _mlp(tmp_path)
    data[3, 0, 15] = np.nan     # the last position: ReduceMax gives -FLT_MAX for this sample
    np.save(tmp_path / "nan.npy", data)
    p = cli("quantize", "-m", tmp_path / "m.xml", "--data", tmp_path / "nan.npy", "-o", tmp_path / "o", "--no-progress",
            "--no-skip-slow-int8", "--no-cache")
    assert p.returncode == 0, p.stderr
    assert ("ovquant: warning: NaN or Inf in the calibration data: input 'x' in 1 of 30 samples (the first: sample 3); "
            "the ranges ignore non-finite values") in p.stderr.splitlines(), p.stderr
    fixed = data.copy()
    fixed[3, 0, 15] = 0.0
    np.save(tmp_path / "fixed.npy", fixed)
    assert cli("quantize", "-m", tmp_path / "m.xml", "--data", tmp_path / "fixed.npy", "-o", tmp_path / "of",
               "--no-progress", "--no-skip-slow-int8", "--no-cache").returncode == 0
    act = lambda out: {q["name"]: q["range"] for a in report(out, "m")["algorithms"] for q in a.get("quantizers", [])
                       if q["kind"] == "activations"}
    got, want = act(tmp_path / "o"), act(tmp_path / "of")
    assert set(got) == set(want) == {"x/fq_output_0", "h/fq_output_0"}
    for name in got:   # the NaN left out of its sample, not -FLT_MAX folded into a mean
        np.testing.assert_allclose(got[name], want[name], rtol=0.1, atol=1e-3, err_msg=name)
    np.save(tmp_path / "allnan.npy", np.full_like(data, np.nan))
    p = cli("quantize", "-m", tmp_path / "m.xml", "--data", tmp_path / "allnan.npy", "-o", tmp_path / "o2", "--no-progress")
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "ovquant: error: calibration data: input 'x' has no finite value in any of the 30 samples (NaN or Inf everywhere)"], p.stderr
    assert not (tmp_path / "o2").exists()


def test_a_cached_run_on_data_with_nan_gives_the_model_of_the_first_run(tmp_path):
    """The cache kept the in-graph per-sample values of a tensor with a NaN (-FLT_MAX where the CPU's ReduceMax
    met it last) while the run itself redid that tensor in numpy: the rerun read -FLT_MAX into its ranges
    (a noise model). Now the numpy values are what is cached; an all-NaN input caches nothing."""
    data = _mlp(tmp_path)
    data[3, 0, 15] = np.nan
    np.save(tmp_path / "nan.npy", data)
    env = {**ENV, "OVQUANT_CACHE_DIR": str(tmp_path / "cache")}
    ranges = []
    for out in ("o1", "o2"):
        p = cli("quantize", "-m", tmp_path / "m.xml", "--data", tmp_path / "nan.npy", "-o", tmp_path / out,
                "--no-progress", "--no-skip-slow-int8", env=env)
        assert p.returncode == 0 and "passes with" not in p.stderr, p.stderr
        ranges.append({q["name"]: q["range"] for a in report(tmp_path / out, "m")["algorithms"]
                       for q in a.get("quantizers", [])})
    assert ranges[0] == ranges[1]
    assert (tmp_path / "o1" / "m.bin").read_bytes() == (tmp_path / "o2" / "m.bin").read_bytes()
    np.save(tmp_path / "allnan.npy", np.full_like(data, np.nan))
    for _ in range(2):
        p = cli("quantize", "-m", tmp_path / "m.xml", "--data", tmp_path / "allnan.npy", "-o", tmp_path / "o3",
                "--no-progress", env=env)
        assert p.returncode == 2 and "has no finite value" in p.stderr, p.stderr


def test_a_cached_rerun_counts_samples_not_batch_rows(tmp_path):
    """An input of batch 4: the cache holds 4 rows per sample, and a rerun from it said 160 samples for 40."""
    r = np.random.default_rng(0)
    x = ops.parameter([4, 16], np.float32, name="x")
    y = ops.matmul(ops.relu(x), ops.constant(r.standard_normal((16, 8)).astype(np.float32)), False, False, name="fc")
    ov.save_model(ov.Model([y], [x], "b4"), str(tmp_path / "b4.xml"), compress_to_fp16=False)
    np.save(tmp_path / "d.npy", r.standard_normal((40, 4, 16)).astype(np.float32))
    env = {**ENV, "OVQUANT_CACHE_DIR": str(tmp_path / "cache")}
    counts = []
    for out in ("o1", "o2"):
        p = cli("quantize", "-m", tmp_path / "b4.xml", "--data", tmp_path / "d.npy", "-o", tmp_path / out,
                "--no-progress", env=env)
        assert p.returncode == 0 and "the data has only 40 samples; using 40" in p.stderr, p.stderr
        counts.append(report(tmp_path / out, "b4")["stages"][0]["n_samples"])
    assert counts == [40, 40]
    assert report(tmp_path / "o2", "b4")["stages"][0]["n_cached"] > 0


def test_a_path_with_a_lone_surrogate_is_the_one_line_error_escaped(tmp_path, monkeypatch):
    """A config whose model path is "\\ud800" (JSON allows it): printing the error to a strict UTF-8 stderr (a
    pipe with PYTHONIOENCODING=utf-8:strict, a test's capture) raised UnicodeEncodeError."""
    import io

    from ovquant import cli as ovcli

    (tmp_path / "c.json").write_text('{"model": {"model_name": "t", "model": "\\ud800"}, "engine": {"data_source": '
                                     '"x.npy"}, "compression": {"algorithms": [{"name": "DefaultQuantization"}]}}')
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, encoding="utf-8", errors="strict"))
    rc = ovcli.main(["quantize", "-c", str(tmp_path / "c.json"), "-o", str(tmp_path / "o")])
    sys.stderr.flush()
    assert rc == 2 and raw.getvalue().decode() == "ovquant: error: \\ud800: no such model file\n"


def test_an_output_name_of_undecodable_bytes_prints_as_escapes_after_saving(tmp_path):
    """``model_name`` "\\udc80x" is the file name b"\\x80x": the files were written, then printing "saved ..." to a
    strict UTF-8 stdout raised UnicodeEncodeError (a traceback and exit 1 after the commit)."""
    m = models.conv_net()
    ov.save_model(m, str(tmp_path / "m.xml"), compress_to_fp16=False)
    np.save(tmp_path / "d.npy", np.concatenate(models.random_samples(m, 4)))
    cfg = {"model": {"model_name": "\udc80x", "model": str(tmp_path / "m.xml")}, "engine": {"data_source": str(tmp_path / "d.npy")},
           "compression": {"algorithms": [{"name": "DefaultQuantization"}]}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    p = cli("quantize", "-c", tmp_path / "c.json", "-o", tmp_path / "o", "--no-progress",
            env={**ENV, "PYTHONIOENCODING": "utf-8:strict"})
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert p.stdout.strip().splitlines()[-1] == f"saved {tmp_path / 'o'}/\\udc80x.xml"
    assert os.path.exists(os.path.join(os.fsencode(tmp_path / "o"), b"\x80x.xml"))
