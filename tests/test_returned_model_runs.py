"""Every model ``ovquant.quantize`` returns has been compiled and run on the first calibration sample: one
that the device refuses, or whose outputs are not finite where FP32's are, raises QuantizationFailed.

The broken edits come from a third-party algorithm registered through the public hooks: a per-row weight
scale on ``W @ x`` (the CPU plugin refuses it once the weights are int8) and a Multiply by infinity."""
import json
import os
import re
import shutil
import subprocess

import numpy as np
import openvino as ov
import pytest
from openvino import opset13 as ops

import ovquant
from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.errors import QuantizationFailed
from ovquant.registry import register_plugin, unregister_plugin


def w_first_model():
    """``y = relu(W0 @ x) @ W1`` with x [1, 64, 8]."""
    rng = np.random.default_rng(0)
    x = ops.parameter([1, 64, 8], np.float32, name="x")
    h = ops.relu(ops.matmul(ops.constant(rng.standard_normal((32, 64)).astype(np.float32), name="W0"), x,
                            False, False, name="mm0"), name="h")
    y = ops.matmul(h, ops.constant(rng.standard_normal((8, 4)).astype(np.float32)), False, False, name="mm1")
    samples = [rng.standard_normal((1, 64, 8)).astype(np.float32) for _ in range(8)]
    return ov.Model([y], [x], "w_first"), samples


class RowScales(Algorithm):
    """Quantizes ``relu(W0 @ x) @ W1`` as placement did before a constant first input went per tensor: W0
    with one scale per row, W1 one per column, x and the relu per tensor."""

    name = "TestRowScales"

    def apply(self, graph, stats):
        mm = graph.node("mm0")
        w = graph.constant_value(mm.input_value(0))
        hi = np.abs(w).max(axis=1, keepdims=True)
        graph.insert_fake_quantize([mm.input(0)], -hi, hi, 255, name="mm0/row_scales")
        graph.insert_fake_quantize([mm.input(1)], -4.0, 4.0 * 127 / 128, 256, name="x/fq")   # zero point 0
        graph.insert_fake_quantize(list(graph.node("h").output(0).get_target_inputs()), 0.0, 20.0, 256, name="h/fq")
        mm1 = graph.node("mm1")
        w1 = np.abs(graph.constant_value(mm1.input_value(1))).max(axis=0, keepdims=True)
        graph.insert_fake_quantize([mm1.input(1)], -w1, w1, 255, name="mm1/w_fq")
        return {"summary": "per-row scales on W0"}


class TimesInf(Algorithm):
    """Multiplies the output of ``h`` by +inf (h >= 0, so some outputs become inf or NaN)."""

    name = "TestTimesInf"

    def apply(self, graph, stats):
        h = graph.node("h")
        targets = list(h.output(0).get_target_inputs())
        mul = ops.multiply(h.output(0), ops.constant(np.float32(np.inf)), name="h/inf")
        for t in targets:
            t.replace_source_output(mul.output(0))
        graph.invalidate()
        return {"summary": "h times inf"}


@pytest.fixture()
def broken_algorithms():
    class Plugin:
        @hookimpl
        def register_algorithms(self, register):
            register(RowScales)
            register(TimesInf)

    name = register_plugin(Plugin(), name="test-broken-edits")
    yield
    unregister_plugin(name)


def test_a_model_the_device_refuses_raises_naming_the_quantizer(broken_algorithms):
    m, samples = w_first_model()
    with pytest.raises(QuantizationFailed) as info:
        ovquant.quantize(m, samples, pipeline=["TestRowScales"])
    msg = str(info.value)
    assert re.search(r"does not run on CPU: .*any_of\(scale.size\(\), OC, 1U\)", msg), msg
    assert msg.endswith("it runs with quantizer 'mm0/row_scales' in float: put 'mm0' in the ignored scope "
                        "(--ignored-scope mm0)"), msg


def test_the_cli_names_the_quantizer_and_writes_nothing(tmp_path):
    """The installed CLI with the broken algorithm in an installed third-party package (entry point)."""
    m, samples = w_first_model()
    ov.save_model(m, str(tmp_path / "m.xml"))
    np.save(tmp_path / "d.npy", np.concatenate(samples))
    pkg = tmp_path / "site"
    (pkg / "broken_edits-1.0.dist-info").mkdir(parents=True)
    (pkg / "broken_edits-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-edits\nVersion: 1.0\n")
    (pkg / "broken_edits-1.0.dist-info" / "entry_points.txt").write_text("[ovquant]\nbroken_edits = broken_edits\n")
    (pkg / "broken_edits.py").write_text(
        "from ovquant import hookimpl\nfrom test_returned_model_runs import RowScales\n\n\n"
        "@hookimpl\ndef register_algorithms(register):\n    register(RowScales)\n")
    cfg = {"model": {"model_name": "m", "model": str(tmp_path / "m.xml"), "weights": str(tmp_path / "m.bin")},
           "engine": {"type": "simplified", "data_source": str(tmp_path / "d.npy")},
           "compression": {"algorithms": [{"name": "TestRowScales"}]}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkg), os.path.dirname(__file__)]),
           "OVQUANT_CACHE_DIR": ""}
    env.pop("OVQUANT_DISABLE_PLUGIN_AUTOLOAD", None)
    exe = shutil.which("ovquant")
    out = subprocess.run([exe, "quantize", "-c", tmp_path / "c.json", "-o", tmp_path / "out"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ovquant: error: the quantized model does not run on CPU: ") and \
        "it runs with quantizer 'mm0/row_scales' in float: put 'mm0' in the ignored scope (--ignored-scope mm0)" in last, last
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "out" / "m.xml").exists()


def test_non_finite_outputs_raise_naming_the_output(broken_algorithms):
    m, samples = w_first_model()
    name = m.outputs[0].get_node().get_friendly_name() if not m.outputs[0].get_names() else m.outputs[0].get_any_name()
    with pytest.raises(QuantizationFailed, match=rf"output '{name}' of the quantized model is not finite"):
        ovquant.quantize(m, samples, pipeline=["TestTimesInf"])


def test_outputs_non_finite_in_fp32_too_are_not_a_failure():
    """A model whose FP32 output is already inf on the sample is returned: the check compares with FP32."""
    x = ops.parameter([1, 16], np.float32, name="x")
    w = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    y = ops.divide(ops.matmul(x, ops.constant(w), False, False, name="fc"), ops.constant(np.float32(0.0)), name="y")
    m = ov.Model([y], [x], "div0")
    samples = [np.random.default_rng(i).standard_normal((1, 16)).astype(np.float32) for i in range(8)]
    q = ovquant.quantize(m, samples, skip_slow_int8=False)
    assert any(n.get_type_name() == "FakeQuantize" for n in q.get_ordered_ops())
