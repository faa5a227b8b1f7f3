"""``ovquant demo``: the shipped Fashion-MNIST CNN quantizes with the defaults, shrinks and keeps its accuracy."""
import json
import os
from importlib import resources

import openvino as ov
import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from ovquant.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo") / "out", verbose=False)


def test_demo_data_is_shipped():
    folder = resources.files("ovquant") / "data"
    sizes = {n: len((folder / n).read_bytes()) for n in ("demo_cnn.xml", "demo_cnn.bin", "demo_data.npz", "demo_meta.json")}
    assert sum(sizes.values()) < 2 * 1024 * 1024
    meta = json.loads((folder / "demo_meta.json").read_text())
    assert meta["input"]["name"] == "image" and meta["output"]["name"] == "logits"


def test_demo_outputs(demo):
    for key in ("xml", "bin", "report"):
        assert os.path.isfile(demo[key]), key
    assert os.path.dirname(demo["xml"]) == str(demo["output_dir"])
    report = json.loads(open(demo["report"]).read())
    assert report["pipeline"] == demo["pipeline"] and "MinMaxQuantization" in demo["pipeline"]
    assert report["demo"]["top1_int8"] == demo["top1_int8"]


def test_demo_int8_is_small_and_quantized(demo):
    fp32_bin = len((resources.files("ovquant") / "data" / "demo_cnn.bin").read_bytes())
    assert demo["bin_bytes_fp32"] == fp32_bin
    assert os.path.getsize(demo["bin"]) == demo["bin_bytes_int8"]
    assert demo["bin_bytes_int8"] <= 0.35 * fp32_bin
    saved = ov.Core().read_model(demo["xml"])
    n_fq = sum(op.get_type_name() == "FakeQuantize" for op in saved.get_ops())
    assert n_fq > 0 and n_fq == demo["n_fakequantize"]


def test_demo_accuracy(demo):
    assert demo["n_calibration"] == 300 and demo["n_evaluation"] == 1000
    assert demo["top1_fp32"] > 0.85
    assert abs(demo["top1_fp32"] - demo["fp32_top1_at_training"]) <= 0.005
    assert abs(demo["top1_int8"] - demo["top1_fp32"]) <= 0.010
    assert demo["top1_agreement"] >= 0.97
    assert demo["latency_ms_fp32"] > 0 and demo["latency_ms_int8"] > 0


def test_demo_refuses_an_empty_output_folder_as_quantize_does(tmp_path):
    """``ovquant demo -o ""`` wrote into the current folder; ``ovquant quantize -o ""`` is refused."""
    import shutil
    import subprocess

    env = {**os.environ, "OVQUANT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    p = subprocess.run([shutil.which("ovquant"), "demo", "-o", ""], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 2 and p.stderr.strip() == \
        "ovquant: error: -o/--output-dir: must be a non-empty single-line value, got ''", p.stderr
    assert list(tmp_path.iterdir()) == []
