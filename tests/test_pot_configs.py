"""POT compatibility: POT's published config files, POT's example config on the demo model, POT's
hardware-config files, and the reading of config files (encodings, comments, size).

The POT config files are in tests/data/pot_configs (see its README). Each runs with only the model
paths and the engine section replaced: the ones that name only DefaultQuantization,
MinMaxQuantization, FastBiasCorrection or ActivationChannelAlignment must quantize, every other one
must be refused in one line naming what ovquant lacks.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import json5
import numpy as np
import openvino as ov
import pytest

from ovquant import api
from ovquant.config import load_config, read_json, strip_comments
from ovquant.demo import load_demo
from ovquant.errors import ConfigError

DATA = Path(__file__).parent / "data"
POT_CONFIGS = sorted((DATA / "pot_configs").rglob("*.json"))
CORE_DATA = Path(api.__file__).parent / "data"
ENV = {**os.environ, "OVQUANT_DISABLE_PLUGIN_AUTOLOAD": "1"}
RUNNABLE = {"DefaultQuantization", "MinMaxQuantization", "FastBiasCorrection", "ActivationChannelAlignment"}
N_CALIB = 32


@pytest.fixture(scope="module")
def demo():
    model, images, labels, _ = load_demo()
    return model, images, labels


@pytest.fixture(scope="module")
def calib_npz(tmp_path_factory, demo):
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, image=demo[1][:N_CALIB])
    return path


def _with_paths(raw: dict, npz: Path) -> dict:
    """POT's config with only the model paths and the engine section replaced."""
    d = json.loads(json.dumps(raw))
    for m in [d["model"]] + list(d["model"].get("cascade", [])):
        if "model" in m:
            m["model"] = str(CORE_DATA / "demo_cnn.xml")
            m["weights"] = str(CORE_DATA / "demo_cnn.bin")
    d["engine"] = {"type": "simplified", "data_source": str(npz)}
    return d


def _expected_refusal(raw: dict):
    """What a config asks that ovquant does not have (the word the error line must name), or None."""
    if "cascade" in raw["model"]:
        return "cascade"
    other = [a["name"] for a in raw["compression"]["algorithms"] if a["name"] not in RUNNABLE]
    if other:
        return other[0]
    if "optimizer" in raw:
        return "optimizer"
    return None


def _run(raw: dict, npz: Path, out: Path, name: str):
    cfg = out / f"{name}.json"
    cfg.write_text(json.dumps(_with_paths(raw, npz)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = api.quantize_from_config(str(cfg), output_dir=str(out / "out"), use_cache=False, progress=False)
    return result, [str(w.message) for w in caught]


def test_pot_published_configs_quantize_or_are_refused_in_one_line(tmp_path, calib_npz):
    assert len(POT_CONFIGS) == 45
    quantized, refused = [], {}
    for i, path in enumerate(POT_CONFIGS):
        raw = json5.loads(path.read_text())
        expected = _expected_refusal(raw)
        rel = str(path.relative_to(DATA / "pot_configs"))
        if expected is None:
            result, _ = _run(raw, calib_npz, tmp_path, f"c{i}")
            q = ov.Core().read_model(result["xml"])
            assert any(n.get_type_name() == "FakeQuantize" for n in q.get_ordered_ops()), rel
            quantized.append(rel)
        else:
            with pytest.raises(ConfigError) as info:
                _run(raw, calib_npz, tmp_path, f"c{i}")
            msg = str(info.value)
            assert "\n" not in msg and expected in msg, (rel, msg)
            refused.setdefault(expected, []).append(rel)
    counts = {k: len(v) for k, v in refused.items()}
    assert len(quantized) == 25, quantized
    assert counts == {"TunableQuantization": 6, "AccuracyAwareQuantization": 5, "WeightSparsity": 3, "cascade": 2,
                      "QuantNoiseEstimator": 1, "INT4MixedQuantization": 1, "RangeOptimization": 1,
                      "QuantileTuningAlgorithm": 1}, counts


def test_pot_spec_misspelt_key_warns_and_bert_model_name_names_the_output(tmp_path, calib_npz):
    spec = json5.loads((DATA / "pot_configs" / "default_quantization_spec.json").read_text())
    result, caught = _run(spec, calib_npz, tmp_path, "spec")
    assert any("compression.inplase_statistics" in w and "inplace_statistics" in w for w in caught), caught
    bert = json5.loads((DATA / "pot_configs/examples/quantization/nlp/bert_base_squad_1_1_tf_int8.json").read_text())
    result, _ = _run(bert, calib_npz, tmp_path, "bert")
    assert Path(result["xml"]).name == "bert_base_squad_1_1.xml"


@pytest.mark.parametrize("model_name", [None, ""])
def test_without_model_name_the_output_is_named_after_the_model_file_as_pot_names_it(tmp_path, calib_npz, model_name):
    """POT: ``if not model.model_name: model.model_name = Path(model.model).stem``; two configs without a
    name then write two models, not one model.xml twice. The installed CLI, as a user runs it."""
    for stem in ("alpha", "beta"):
        for ext in (".xml", ".bin"):
            shutil.copy(CORE_DATA / f"demo_cnn{ext}", tmp_path / f"{stem}{ext}")
        model = {"model": str(tmp_path / f"{stem}.xml"), "weights": str(tmp_path / f"{stem}.bin")}
        if model_name is not None:
            model["model_name"] = model_name
        cfg = tmp_path / f"{stem}.json"
        cfg.write_text(json.dumps({"model": model, "engine": {"type": "simplified", "data_source": str(calib_npz)},
                                   "compression": {"algorithms": [{"name": "DefaultQuantization"}]}}))
        proc = subprocess.run([shutil.which("ovquant"), "quantize", "-c", cfg, "-o", tmp_path / "out", "--no-progress"],
                              env={**ENV, "OVQUANT_CACHE_DIR": ""}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.xml")) == ["alpha.xml", "beta.xml"]


def test_keys_pot_ignores_warn_and_pot_only_sections_are_refused(tmp_path, calib_npz):
    raw = json5.loads((DATA / "pot_configs" / "simplified_mode_template.json").read_text())
    raw["calibration"] = {}
    raw["model"]["xml"] = "a.xml"
    raw["engine"] = {}
    result, caught = _run(raw, calib_npz, tmp_path, "extra")
    assert any(w.startswith("calibration: unknown top-level key, ignored") for w in caught), caught
    assert any(w.startswith("model.xml: unknown key, ignored") for w in caught), caught
    with_opt = dict(raw, optimizer={"name": "Tpe", "params": {}})
    with pytest.raises(ConfigError, match=r"^optimizer: POT's global optimizer 'Tpe'"):
        _run(with_opt, calib_npz, tmp_path, "opt")
    both = dict(raw, model={"model_name": "a", "name": "b", "model": "m.xml"})
    cfg = tmp_path / "both.json"
    cfg.write_text(json.dumps(_with_paths(both, calib_npz)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_config(str(cfg)).model.model_name == "a"
    assert any("model.name: ignored" in str(w.message) for w in caught)


def test_pot_refuses_what_pot_refuses_an_unknown_algorithm_param(tmp_path, calib_npz):
    raw = json5.loads((DATA / "pot_configs" / "simplified_mode_template.json").read_text())
    raw["compression"]["algorithms"][0]["params"]["stat_subset_sise"] = 10
    with pytest.raises(ConfigError, match=r"params\.stat_subset_sise: unknown key"):
        _run(raw, calib_npz, tmp_path, "typo")


# ---- POT's example config on the demo model ---------------------------------------------------------------
def _top1(model: ov.Model, images, labels) -> float:
    req = ov.Core().compile_model(model, "CPU").create_infer_request()
    pred = [int(np.argmax(req.infer({0: images[i:i + 1]})[0])) for i in range(len(images))]
    return float(np.mean(np.array(pred) == labels))


def test_pot_example_config_unchanged_keeps_the_default_accuracy_on_the_demo(tmp_path, demo):
    model, images, labels = demo
    npz = tmp_path / "calib.npz"
    np.savez(npz, image=images[:300])
    text = (DATA / "pot_default_quantization_example.jsonc").read_text()
    text = text.replace('"model.xml"', json.dumps(str(CORE_DATA / "demo_cnn.xml")))
    text = text.replace('"model.bin"', json.dumps(str(CORE_DATA / "demo_cnn.bin")))
    text = text.replace('"calibration_data"', json.dumps(str(npz)))
    cfg = tmp_path / "example.jsonc"
    cfg.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "ovquant.cli", "quantize", "-c", str(cfg), "-o", str(tmp_path / "pot"),
                           "--no-cache", "--no-progress"], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    pot_model = ov.Core().read_model(str(tmp_path / "pot" / "model.xml"))
    weight_fq = [n for n in pot_model.get_ordered_ops() if n.get_type_name() == "Constant"
                 and n.get_output_element_type(0) in (ov.Type.i8, ov.Type.u8)]
    assert weight_fq, "weights are stored as 8-bit integers"
    default = api.quantize(model, images[:300])
    fp32, acc_pot, acc_default = (_top1(m, images, labels) for m in (model, pot_model, default))
    # measured: FP32 0.926, POT's example config 0.923, default 0.925 (POT 2023.3 itself: 0.916 and 0.925)
    print(f"top-1: FP32 {fp32:.3f}, POT example config {acc_pot:.3f}, default {acc_default:.3f}")
    assert acc_pot >= acc_default - 0.01, (acc_pot, acc_default, fp32)
    assert acc_pot >= fp32 - 0.02, (acc_pot, fp32)


def _uncompressed(model, samples, params):
    """The quantized model before its weights are folded to integers (FakeQuantize ops kept)."""
    from ovquant.api import build_pipeline
    from ovquant.dataset import open_source

    q, report = build_pipeline(params).run(model.clone(), open_source([{0: s[None]} for s in samples],
                                                                       [tuple(p.get_shape()) for p in model.inputs]))
    return q, report


def test_level_low_high_set_the_grid_as_pot_does(demo):
    """POT's example weights (symmetric, level_low 0, level_high 255) give 256 levels and a signed range
    (POT: fake_quantize.compute_levels, |high| + |low| + 1, and symmetric_range, [-max, max]); ovquant
    puts 0 on the grid of an even number of levels (lo = -max * levels / (levels - 2))."""
    model, images, _ = demo
    for lo, hi, levels in ((0, 255, 256), (-127, 127, 255), (-128, 127, 256), (-7, 7, 15)):
        q, _ = _uncompressed(model, images[:16], {"preset": "mixed", "saturation_fix": "no", "weights": {
            "mode": "symmetric", "granularity": "perchannel", "level_low": lo, "level_high": hi}})
        fqs = [n for n in q.get_ordered_ops() if n.get_type_name() == "FakeQuantize"
               and n.input_value(0).get_node().get_type_name() == "Constant"]
        assert len(fqs) == 5
        for fq in fqs:
            w = fq.input_value(0).get_node().get_data().astype(np.float64)
            assert int(fq.get_attributes()["levels"]) == levels
            il = fq.input_value(1).get_node().get_data().ravel()
            ih = fq.input_value(2).get_node().get_data().ravel()
            amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
            np.testing.assert_allclose(ih, np.maximum(amax, max(8e-5, 0.01 * amax.max())), rtol=1e-6)
            np.testing.assert_allclose(il, -ih if levels % 2 else -ih * levels / (levels - 2), rtol=1e-6)


def test_symmetric_weights_with_a_signed_max_estimator_cover_the_negative_weights(demo):
    """POT's example config names ``"max": {"type": "quantile"}`` for symmetric weights; POT takes the
    signed quantile and clips the negative side (EfficientNet-Lite0: top-1 0.0 in POT). ovquant takes
    the quantile of |w| per output channel (numpy reference below)."""
    model, images, _ = demo
    q, _ = _uncompressed(model, images[:16], {"saturation_fix": "no", "weights": {
        "mode": "symmetric", "granularity": "perchannel",
        "range_estimator": {"max": {"type": "quantile", "outlier_prob": 1e-4}}}})
    for fq in [n for n in q.get_ordered_ops() if n.get_type_name() == "FakeQuantize"
               and n.input_value(0).get_node().get_type_name() == "Constant"]:
        w = fq.input_value(0).get_node().get_data().astype(np.float64)
        ref = np.quantile(np.abs(w).reshape(w.shape[0], -1), 1 - 1e-4, axis=1)
        ref = np.maximum(ref, max(8e-5, 0.01 * ref.max()))
        np.testing.assert_allclose(fq.input_value(2).get_node().get_data().ravel(), ref, rtol=1e-5)


# ---- config validation ----------------------------------------------------------------------------------
def _cli_config(tmp_path, mutate, name="cfg.json", encoding=None, raw=None):
    d = {"model": {"model": str(CORE_DATA / "demo_cnn.xml")}, "engine": {"data_source": str(tmp_path / "x.npz")},
         "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {}}]}}
    mutate(d)
    p = tmp_path / name
    if raw is not None:
        p.write_bytes(raw)
    elif encoding:
        p.write_bytes(json.dumps(d).encode(encoding))
    else:
        p.write_text(json.dumps(d))
    return p


def _p(**kv):
    def mutate(d):
        d["compression"]["algorithms"][0]["params"].update(kv)
    return mutate


@pytest.mark.parametrize("params, where, what", [
    ({"weights": {"bits": 1}}, "weights.bits", "must be between 2 and 16, got 1"),
    ({"activations": {"bits": 1}}, "activations.bits", "must be between 2 and 16"),
    ({"weights": {"level_low": 0, "level_high": 256}}, "weights.level_high", "does not fit in 8 bits"),
    ({"weights": {"level_low": -200, "level_high": 200}}, "weights.level_high", "401 levels"),
    ({"weights": {"level_low": 1, "level_high": 255}}, "weights.level_low", "must be 0 or below"),
    ({"weights": {"level_high": 255}}, "weights.level_high", "383 levels"),
    ({"weights": {"bits": 2, "level_low": 0, "level_high": 1}}, "weights.level_high", "2 levels"),
    ({"activations": {"range_estimator": {"max": {"clipping_value": 0}}}}, "max.clipping_value", "must be above 0"),
    ({"activations": {"range_estimator": {"max": {"clipping_value": -3}}}}, "max.clipping_value", "must be above 0"),
    ({"activations": {"range_estimator": {"min": {"clipping_value": 2}}}}, "min.clipping_value", "0 or below"),
    ({"activations": {"range_estimator": {"max": {"clipping_value": float("nan")}}}}, "max.clipping_value",
     "finite number"),
    ({"range_estimator": {"max": {"clipping_value": float("inf")}}}, "range_estimator.max.clipping_value", "finite"),
])
def test_values_the_math_cannot_run_are_refused_in_one_line(tmp_path, params, where, what):
    cfg = _cli_config(tmp_path, _p(**params))   # json.dumps writes NaN and Infinity, as json5 reads them
    proc = subprocess.run([sys.executable, "-m", "ovquant.cli", "quantize", "-c", str(cfg)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and what in lines[0], proc.stderr


def test_two_bit_weights_keep_the_first_layer_under_the_saturation_fix(demo):
    """CPU's saturation fix halves the grid of the first layer; a 2-bit grid halved again rounded every
    weight to 0. Grids of 128 levels or fewer get no saturation fix."""
    from ovquant.quant_math import weights_of

    model, images, _ = demo
    for bits in (2, 4):
        q, _ = _uncompressed(model, images[:16], {"weights": {"bits": bits}, "target_device": "CPU"})
        conv = next(n for n in q.get_ordered_ops() if n.get_type_name() == "Convolution")
        w, wq = weights_of(conv)
        assert wq is not None and np.count_nonzero(wq) > 0.3 * wq.size, bits
        out = ov.Core().compile_model(q, "CPU")(images[:1])[0]
        assert np.isfinite(out).all() and np.abs(out).max() > 0


def test_utf16_and_bom_configs_read(tmp_path):
    for enc in ("utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"):
        p = _cli_config(tmp_path, lambda d: None, name=f"{enc}.json", encoding=enc)
        assert read_json(str(p))["compression"]["algorithms"][0]["name"] == "DefaultQuantization", enc
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{\x00\x00\xd8")   # UTF-16 BOM, then a lone surrogate
    proc = subprocess.run([sys.executable, "-m", "ovquant.cli", "quantize", "-c", str(bad)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "bad.json" in proc.stderr and "UTF-16" in proc.stderr, proc.stderr


def test_a_huge_value_is_not_echoed_whole(tmp_path):
    cfg = _cli_config(tmp_path, _p(preset="x" * 5_000_000))
    proc = subprocess.run([sys.executable, "-m", "ovquant.cli", "quantize", "-c", str(cfg)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr) < 300, proc.stderr[:300]
    assert "params.preset" in proc.stderr and "5000002 characters" in proc.stderr, proc.stderr
    key = _cli_config(tmp_path, lambda d: d["compression"]["algorithms"][0]["params"].update({"k" * 100000: 1}),
                      name="key.json")
    proc = subprocess.run([sys.executable, "-m", "ovquant.cli", "quantize", "-c", str(key)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr) < 600, proc.stderr[:600]


def test_reading_a_large_config_with_comments_stays_linear(tmp_path):
    scope = [f"node_{i}" for i in range(40000)]
    body = json.dumps({"compression": {"algorithms": [{"name": "DefaultQuantization",
                                                        "params": {"ignored": {"scope": scope}}}]}}, indent=2)
    text = "// POT style\n" + body.replace('"node_1",', '"node_1", /* a comment, with "quotes" */', 1)
    text = text.replace("]\n", "],\n", 1)   # and a trailing comma
    p = tmp_path / "big.json"
    p.write_text(text)
    t = time.perf_counter()
    data = read_json(str(p))
    took = time.perf_counter() - t
    assert data["compression"]["algorithms"][0]["params"]["ignored"]["scope"] == scope
    assert took < 2.0, took   # json5 took 24 s on such a file


def test_comment_stripper_keeps_strings_and_lines():
    text = '{"a": "x // not /* a comment */", // c\n "b": [1, 2,], /* two\nlines */ "c": "\\" //",}'
    out = strip_comments(text)
    assert out.count("\n") == text.count("\n")
    assert json.loads(out) == {"a": "x // not /* a comment */", "b": [1, 2], "c": '" //'}


# ---- POT's hardware-config files ------------------------------------------------------------------------
POT_HW = DATA / "pot_hardware"   # POT 2023.3's openvino/tools/pot/configs/hardware (see pot_configs/README.md)


@pytest.mark.parametrize("name", ["cpu", "gpu", "template"])
def test_pot_hardware_configs_load_converted(name):
    from ovquant.hwtarget import load_target

    t = load_target(POT_HW / f"{name}.json")
    assert t.rules("Convolution"), name
    if name != "template":
        from importlib.resources import files

        ours = load_target(files("ovquant.hw_targets") / "cpu.json")
        assert t.rules("Convolution")[0].weights == ours.rules("Convolution")[0].weights[:1] + \
            (t.rules("Convolution")[0].weights[1],)
        assert "MaxPool" in t.agnostic_operations and t.rules("Concat")[0].unified_scales
        if name == "cpu":   # POT's [[0, 1], [4, 5]]: X with H, W with R, as the shipped CPU target has them
            for op in ("LSTMSequence", "GRUSequence"):
                rule, own = t.rules(op)[0], ours.rules(op)[0]
                assert (rule.ports, rule.unified_scales, rule.unified_weight_scales) == \
                    (own.ports, True, True), op


def test_pot_gna_config_is_refused_in_one_line():
    from ovquant.hwtarget import load_target

    with pytest.raises(ValueError) as info:
        load_target(POT_HW / "gna.json")
    msg = str(info.value)
    assert "\n" not in msg and "POT's hardware-config format" in msg and "32-bit" in msg, msg


def test_convert_target_cli(tmp_path):
    out = tmp_path / "gpu_target.json"
    run = lambda *a: subprocess.run([sys.executable, "-m", "ovquant.cli", "convert-target", *a], env=ENV,
                                    capture_output=True, text=True, timeout=120)
    proc = run(str(POT_HW / "gpu.json"), "-o", str(out), "--device", "GPU", "--name", "MY_GPU")
    assert proc.returncode == 0, proc.stderr
    target = json.loads(out.read_text())
    assert target["name"] == "MY_GPU" and target["saturation_fix"] is False
    assert target["preset_aliases"] == {"accuracy": "mixed"}
    proc = run(str(POT_HW / "gpu.json"), "-o", str(out))
    assert proc.returncode == 2 and "exists" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = run(str(POT_HW / "gna.json"), "-o", str(tmp_path / "gna.json"))
    assert proc.returncode == 2 and "32-bit" in proc.stderr and not (tmp_path / "gna.json").exists()
    help_ = subprocess.run([sys.executable, "-m", "ovquant.cli", "convert-target", "--help"], env=ENV,
                           capture_output=True, text=True, timeout=60).stdout
    assert "POT" in help_ and "OUT.json" in help_


def test_preset_accuracy_follows_pot_per_target(demo):
    """POT renames ``accuracy`` to ``mixed`` on CPU, GPU and ANY (configs/config.py), not on NPU."""
    from ovquant.api import build_pipeline
    from ovquant.dataset import open_source

    model, images, _ = demo
    data = [{0: s[None]} for s in images[:8]]

    def weight_modes(target):
        pipe = build_pipeline({"preset": "accuracy"}, target_device=target)
        _, report = pipe.run(model.clone(), open_source(data, [(1, 1, 28, 28)]))
        qs = _quantizers(report)
        return {e["scheme"].split()[1] for e in qs if e["kind"] == "weights"}

    assert weight_modes("CPU") == {"symmetric"}
    assert weight_modes("GPU") == {"symmetric"}
    assert weight_modes("NPU") == {"asymmetric"}


def _quantizers(report):
    found = []

    def walk(v):
        if isinstance(v, dict):
            if "quantizers" in v and isinstance(v["quantizers"], list):
                found.extend(v["quantizers"])
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(report)
    return found
