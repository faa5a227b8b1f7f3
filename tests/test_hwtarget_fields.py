"""Every field of the hardware-target schema does what docs/hw_targets.md says: for each one, a
third-party target that changes it is registered through the ``register_hw_targets`` hook (as a plugin
package would), a small real model is quantized for it, and the test shows the effect on placement.
``FIELD_TESTS`` maps every field (introspected from the schema's attrs classes and keys) to its test."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import attrs
import numpy as np
import openvino as ov
import pytest

import models
from target_package import TargetPackage
from ovquant import hwtarget, registry
from ovquant.api import build_pipeline
from ovquant.errors import HardwareTargetError, PluginError
from ovquant.graph import Graph
from ovquant.hwtarget import HardwareTarget, OpRule, Scheme

Q8_A = {"bits": 8, "mode": ["symmetric", "asymmetric"], "granularity": "pertensor"}
Q8_W = {"bits": 8, "mode": "symmetric", "granularity": "perchannel", "level_low": -127, "level_high": 127}
Q8_W_ASYM = {"bits": 8, "mode": "asymmetric", "granularity": "perchannel", "level_low": -128, "level_high": 127}
CONV = {"activations": "q8_a", "weights": ["q8_w", "q8_w_asym"]}
#: the reference third-party target: the CPU's rules for the ops of tests/models.py, no saturation fix
BASE = {
    "$schema_version": 1,
    "name": "ACME",
    "description": "ACME accelerator (test target)",
    "schemes": {"q8_a": Q8_A, "q8_w": Q8_W, "q8_w_asym": Q8_W_ASYM},
    "operations": {
        **{op: {**CONV} for op in ("Convolution", "GroupConvolution", "DepthwiseConvolution", "MatMul")},
        "Add": {"activations": "q8_a"},
        "ReduceMean": {"activations": "q8_a", "ports": [0]},
        "Concat": {"unified_scales": True},
    },
    "agnostic_operations": ["MaxPool", "Concat"],
}


@pytest.fixture
def acme(tmp_path):
    """``acme(**changes)`` registers BASE with ``changes`` applied (a function may edit a copy) and
    returns its name; the plugins are unregistered afterwards."""
    names = []

    def register(edit=None, **changes):
        data = copy.deepcopy(BASE)
        data.update(copy.deepcopy(changes))
        data["name"] = changes.get("name", f"ACME{len(names)}")
        if edit is not None:
            edit(data)
        path = tmp_path / f"{data['name'].lower()}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        names.append(registry.register_plugin(TargetPackage(path), name=f"acme-{len(names)} (test)"))
        return data["name"]

    yield register
    for n in names:
        registry.unregister_plugin(n)
    assert registry.lookup("hw_targets", "CPU").name == "CPU"


def run(model, target, samples=None, **kw):
    samples = samples or models.random_samples(model, 8, seed=5)
    pipe = build_pipeline(None, pipeline=["MinMaxQuantization"], target_device=target, **kw)
    return pipe.run(model.clone(), samples)


def fqs(model) -> dict:
    return {n.get_friendly_name(): n for n in model.get_ordered_ops() if n.get_type_name() == "FakeQuantize"}


def entries(report) -> dict:
    (mm,) = [a for a in report["algorithms"] if a["name"] == "MinMaxQuantization"]
    return {e["name"]: e for e in mm["quantizers"]}


def fq_range(fq) -> tuple:
    return tuple(Graph.constant_value(fq.input_value(i)).astype(np.float64) for i in (1, 2))


def input_fq(model, node: str, port: int):
    """The FakeQuantize feeding input ``port`` of ``node``, or None."""
    n = {x.get_friendly_name(): x for x in model.get_ordered_ops()}[node]
    src = n.input_value(port).get_node()
    return src if src.get_type_name() == "FakeQuantize" else None


def edit(path: tuple, value=None, drop=False):
    def apply(d):
        *parents, last = path
        for k in parents:
            d = d[k]
        if drop:
            del d[last]
        else:
            d[last] = value
    return apply


# ---- top level -------------------------------------------------------------------------------------------
def test_name_selects_the_target_case_insensitively(acme):
    name = acme(edit(("operations", "MatMul", "weights"), "q8_w_asym"))
    q, report = run(models.conv_net(), name.lower())
    assert entries(report)["fc/fq_weights_1"]["scheme"].startswith("8-bit asymmetric")
    q, report = run(models.conv_net(), "CPU")
    assert entries(report)["fc/fq_weights_1"]["scheme"].startswith("8-bit symmetric")


def test_aliases_select_the_same_target(acme):
    name = acme(edit(("operations", "MatMul"), drop=True), aliases=["ACME_OLD"])
    assert registry.lookup("hw_targets", "acme_old") is registry.lookup("hw_targets", name)
    q, _ = run(models.conv_net(), "ACME_OLD")
    assert input_fq(q, "fc", 0) is None and input_fq(q, "conv2", 1) is not None


def test_description_is_shown_in_the_plugin_listing(acme, tmp_path):
    """`ovquant plugins` prints a target's description under it (a subprocess registers the package's
    plugin as its entry point would, then runs the CLI)."""
    name = acme(description="ACME accelerator: 8-bit everything")
    path = registry.lookup("hw_targets", name).path
    script = ("import sys; from ovquant import hookimpl, registry; from ovquant.cli import main\n"
              "class P:\n    @hookimpl\n    def register_hw_targets(self, register):\n"
              f"        register({path!r})\n"
              "registry.register_plugin(P(), name='acme'); sys.exit(main(['plugins']))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OVQUANT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    (i,) = [k for k, ln in enumerate(lines) if ln.split() and ln.split()[0] == name]
    assert lines[i + 1].strip() == "ACME accelerator: 8-bit everything"


def test_path_is_the_registered_file(acme, tmp_path):
    name = acme()
    assert registry.lookup("hw_targets", name).path == str(tmp_path / f"{name.lower()}.json")


def test_schema_version_other_than_1_is_refused_naming_the_plugin(acme):
    with pytest.raises(PluginError, match=r"acme-0 \(test\).*\$schema_version: 2 is not supported"):
        acme(**{"$schema_version": 2})
        registry.lookup("hw_targets", "CPU")


def test_saturation_fix_halves_the_first_layer_weights(acme):
    m = models.conv_net()
    _, fixed = run(m, acme(saturation_fix=True))
    _, plain = run(m, acme(saturation_fix=False))
    assert entries(fixed)["conv1/fq_weights_1"]["saturation_fix"] is True
    assert entries(plain)["conv1/fq_weights_1"]["saturation_fix"] is False
    lo_f, lo_p = entries(fixed)["conv1/fq_weights_1"]["range"][0], entries(plain)["conv1/fq_weights_1"]["range"][0]
    assert lo_f == pytest.approx(lo_p * 254 / 126, rel=1e-5)


def test_preset_aliases_run_another_preset(acme):
    m = models.conv_net()
    _, report = run(m, acme(preset_aliases={"performance": "accuracy"}), preset="performance")
    assert entries(report)["image/fq_output_0"]["scheme"].startswith("8-bit asymmetric")
    assert entries(report)["conv1/fq_weights_1"]["scheme"].startswith("8-bit asymmetric")
    _, report = run(m, acme(), preset="performance")
    assert entries(report)["image/fq_output_0"]["scheme"].startswith("8-bit symmetric")


def test_schemes_are_referenced_by_name_and_expand_in_order(acme):
    """A named scheme with two modes gives two candidates, symmetric first: performance picks it, mixed
    the last; the same scheme inline places the same."""
    m = models.conv_net()
    for ref in ("q8_a", Q8_A):
        name = acme(edit(("operations", "Convolution", "activations"), ref))
        _, perf = run(m, name, preset="performance")
        _, mixed = run(m, name, preset="mixed")
        assert entries(perf)["image/fq_output_0"]["scheme"] == "8-bit symmetric pertensor"
        assert entries(mixed)["image/fq_output_0"]["scheme"] == "8-bit asymmetric pertensor"


def test_operations_an_op_type_without_a_rule_stays_float(acme):
    q, report = run(models.conv_net(), acme(edit(("operations", "MatMul"), drop=True)))
    assert input_fq(q, "fc", 0) is None and input_fq(q, "fc", 1) is None
    assert input_fq(q, "conv2", 1) is not None
    q, _ = run(models.conv_net(), acme())
    assert input_fq(q, "fc", 0) is not None and input_fq(q, "fc", 1) is not None


def test_agnostic_operations_quantizers_move_up_through_them(acme):
    m = models.conv_net()
    q, _ = run(m, acme())
    assert input_fq(q, "pool1", 0) is not None and input_fq(q, "conv2", 0) is None   # moved above the pool
    q, _ = run(m, acme(agnostic_operations=["Concat"]))
    assert input_fq(q, "pool1", 0) is None and input_fq(q, "conv2", 0) is not None   # stays at conv2


# ---- op rules --------------------------------------------------------------------------------------------
def test_activations_absent_quantizes_only_the_weights(acme):
    q, _ = run(models.conv_net(), acme(edit(("operations", "Convolution"), {"weights": ["q8_w"]})))
    assert input_fq(q, "conv1", 1) is not None and input_fq(q, "conv1", 0) is None
    assert input_fq(q, "fc", 0) is not None


def test_weights_absent_leaves_constant_inputs_float(acme):
    q, _ = run(models.conv_net(), acme(edit(("operations", "MatMul"), {"activations": "q8_a"})))
    assert input_fq(q, "fc", 1) is None and input_fq(q, "fc", 0) is not None
    assert input_fq(q, "conv1", 1) is not None


def test_ports_limit_the_quantized_inputs(acme):
    q, _ = run(models.conv_net(), acme(edit(("operations", "MatMul", "ports"), [1])))
    assert input_fq(q, "fc", 0) is None and input_fq(q, "fc", 1) is not None
    q, _ = run(models.conv_net(), acme(edit(("operations", "Convolution", "ports"), [0])))
    assert input_fq(q, "conv1", 0) is not None and input_fq(q, "conv1", 1) is None


def test_unified_scales_on_add_gives_its_inputs_one_range(acme):
    m = models.residual_net()
    edit_add = edit(("operations", "Add"), {"activations": "q8_a", "unified_scales": True})
    q, report = run(m, acme(edit_add))
    a, b = input_fq(q, "residual_add", 0), input_fq(q, "residual_add", 1)
    for x, y in zip(fq_range(a), fq_range(b)):
        np.testing.assert_array_equal(x, y)
    e = entries(report)
    assert e[a.get_friendly_name()]["unified_scale_group"] == e[b.get_friendly_name()]["unified_scale_group"]
    q, report = run(m, acme())
    a, b = input_fq(q, "residual_add", 0), input_fq(q, "residual_add", 1)
    assert not np.array_equal(fq_range(a)[1], fq_range(b)[1])
    assert "unified_scale_group" not in entries(report)[a.get_friendly_name()]


def test_unified_scales_off_on_concat_gives_its_inputs_their_own_ranges(acme):
    m = models.residual_net()
    q, report = run(m, acme(edit(("operations", "Concat"), drop=True)))
    a, b = input_fq(q, "concat", 0), input_fq(q, "concat", 1)
    assert a is not None and b is not None   # still moved up through the agnostic Concat
    assert not np.array_equal(fq_range(a)[1], fq_range(b)[1])
    assert not any("unified_scale_group" in e for e in entries(report).values())
    q, _ = run(m, acme())
    a, b = input_fq(q, "concat", 0), input_fq(q, "concat", 1)
    np.testing.assert_array_equal(fq_range(a)[1], fq_range(b)[1])


def test_attributes_select_the_nodes_a_rule_applies_to(acme):
    # fc is a MatMul with transpose_b true
    rules = lambda tb: [{**CONV, "attributes": {"transpose_b": tb}}]
    q, _ = run(models.conv_net(), acme(edit(("operations", "MatMul"), rules(False))))
    assert input_fq(q, "fc", 0) is None and input_fq(q, "fc", 1) is None
    q, _ = run(models.conv_net(), acme(edit(("operations", "MatMul"), rules(True))))
    assert input_fq(q, "fc", 0) is not None and input_fq(q, "fc", 1) is not None


def test_requires_activations_leaves_an_op_fed_a_constant_in_float(acme):
    """MatMul rule with ``requires_activations: [0, 1]``: the MatMuls with constant weights (q, k) get no
    quantizer at all, the MatMul of two activations (qk) gets both; without the key all are quantized."""
    m = models.matmul_net()
    q, _ = run(m, acme(edit(("operations", "MatMul"), {**CONV, "requires_activations": [0, 1]})))
    for name in ("q", "k"):
        assert input_fq(q, name, 0) is None
        assert q.get_ordered_ops()[0] is not None and next(
            n for n in q.get_ordered_ops() if n.get_friendly_name() == name).input_value(1).get_node().get_type_name() == "Constant"
    assert input_fq(q, "qk", 0) is not None and input_fq(q, "qk", 1) is not None
    q, _ = run(m, acme(edit(("operations", "MatMul"), {**CONV})))
    assert input_fq(q, "q", 0) is not None


def _lstm_net(r_factor=0.2, t=5, i=8, h=12):
    """An LSTM with H an input (so X and H are activations) and R's weights smaller than W's."""
    import openvino.opset13 as ops
    rng = np.random.default_rng(3)
    x, h0 = ops.parameter([1, t, i], np.float32, name="x"), ops.parameter([1, 1, h], np.float32, name="h0")
    w = rng.normal(0, 0.5, (1, 4 * h, i)).astype(np.float32)
    r = (r_factor * rng.normal(0, 0.5, (1, 4 * h, h))).astype(np.float32)
    seq = ops.lstm_sequence(x, h0, ops.constant(np.zeros((1, 1, h), np.float32)), ops.constant(np.array([t], np.int32)),
                            ops.constant(w), ops.constant(r), ops.constant(np.zeros((1, 4 * h), np.float32)), h,
                            "forward", name="rnn")
    return ov.Model([ops.result(seq.output(0))], [x, h0])


def test_unified_weight_scales_give_an_ops_weights_one_range_per_channel(acme):
    """LSTMSequence rule with ``unified_weight_scales``: W (port 4) and R (port 5) get one range per output
    channel (the larger of the two), the report names the group; without it, each keeps its own."""
    m = _lstm_net()
    rule = {"activations": "q8_a", "weights": "q8_w", "ports": [0, 1, 4, 5]}
    q, report = run(m, acme(edit(("operations", "LSTMSequence"), {**rule, "unified_weight_scales": True})))
    w, r = input_fq(q, "rnn", 4), input_fq(q, "rnn", 5)
    for x, y in zip(fq_range(w), fq_range(r)):
        np.testing.assert_array_equal(x, y)
    e = entries(report)
    assert e[w.get_friendly_name()]["unified_weight_group"] == e[r.get_friendly_name()]["unified_weight_group"] == "rnn"
    q, report = run(m, acme(edit(("operations", "LSTMSequence"), rule)))
    w, r = input_fq(q, "rnn", 4), input_fq(q, "rnn", 5)
    assert np.all(fq_range(r)[1] < fq_range(w)[1])   # R's weights are smaller: its own, narrower range
    assert "unified_weight_group" not in entries(report)[w.get_friendly_name()]


def test_depthwise_convolution_follows_group_convolution_without_its_own_rule(acme):
    per_channel = {"bits": 8, "mode": "symmetric", "granularity": "perchannel"}

    def group_rule_only(d):
        del d["operations"]["DepthwiseConvolution"]
        d["operations"]["GroupConvolution"] = {"activations": per_channel, "weights": "q8_w"}

    q, _ = run(models.conv_net(), acme(group_rule_only), auto_activations_granularity="perchannel")
    lo, hi = fq_range(input_fq(q, "dwconv", 0))
    assert hi.shape == (1, 16, 1, 1)   # GroupConvolution's per-channel rule, on the depthwise channel axis

    def neither(d):
        del d["operations"]["DepthwiseConvolution"], d["operations"]["GroupConvolution"]

    q, _ = run(models.conv_net(), acme(neither))
    assert input_fq(q, "dwconv", 0) is None and input_fq(q, "dwconv", 1) is None


# ---- schemes ---------------------------------------------------------------------------------------------
def test_bits_set_the_levels(acme):
    four = {"bits": 4, "mode": "symmetric", "granularity": "perchannel"}
    q, report = run(models.conv_net(), acme(edit(("operations", "MatMul", "weights"), four)))
    fq = fqs(q)["fc/fq_weights_1"]
    assert int(fq.get_attributes()["levels"]) == 16 and entries(report)["fc/fq_weights_1"]["levels"] == 16


def test_level_low_and_level_high_set_the_grid(acme):
    grid = {"bits": 4, "mode": "symmetric", "granularity": "perchannel", "level_low": -7, "level_high": 7}
    q, report = run(models.conv_net(), acme(edit(("operations", "MatMul", "weights"), grid)))
    assert int(fqs(q)["fc/fq_weights_1"].get_attributes()["levels"]) == 15
    assert entries(report)["fc/fq_weights_1"]["scheme"] == "4-bit symmetric perchannel [-7,7]"


def test_mode_asymmetric_only_convolution_activations(acme):
    asym = {"bits": 8, "mode": "asymmetric", "granularity": "pertensor"}
    q, report = run(models.conv_net(), acme(edit(("operations", "Convolution", "activations"), asym)),
                    preset="performance")
    e = entries(report)
    assert e["image/fq_output_0"]["scheme"] == "8-bit asymmetric pertensor"   # conv1's input
    assert e["gap/fq_output_0"]["scheme"] == "8-bit symmetric pertensor"     # fc's input: the MatMul rule
    lo, hi = fq_range(input_fq(q, "conv1", 0))
    assert lo < 0 < hi and not np.isclose(-lo, hi * 256 / 254)               # not a symmetric grid


def test_granularity_pertensor_only_matmul_weights(acme):
    pt = {"bits": 8, "mode": "symmetric", "granularity": "pertensor", "level_low": -127, "level_high": 127}
    q, report = run(models.conv_net(), acme(edit(("operations", "MatMul", "weights"), pt)))
    lo, hi = fq_range(fqs(q)["fc/fq_weights_1"])
    assert lo.size == hi.size == 1 and "channels" not in entries(report)["fc/fq_weights_1"]
    assert entries(report)["conv2/fq_weights_1"]["channels"] == 16   # convolutions stay per channel


def test_unified_zeropoint_gives_every_channel_one_zero_point(acme):
    m = models.conv_net()

    def zero_points(uz):
        name = acme(edit(("schemes", "q8_w_asym", "unified_zeropoint"), uz))
        q, _ = run(m, name, preset="accuracy")   # accuracy picks the last weight candidate: asymmetric
        lo, hi = (x.ravel() for x in fq_range(fqs(q)["conv2/fq_weights_1"]))
        return -lo * 255 / (hi - lo)

    zp = zero_points(True)
    np.testing.assert_allclose(zp, np.round(zp[0]), atol=1e-3)
    assert np.ptp(np.round(zero_points(False))) > 0


# ---- the target's public methods, as a third-party algorithm calls them -------------------------------------
def test_port_schemes_and_pick_answer_for_a_node(acme):
    t = registry.lookup("hw_targets", acme(preset_aliases={"accuracy": "mixed"}))
    nodes = {n.get_friendly_name(): n for n in models.conv_net().get_ordered_ops()}
    conv, add = nodes["conv1"], nodes["conv1/add"]
    assert [s.mode for s in t.port_schemes(conv, 0)] == ["symmetric", "asymmetric"]
    assert [s.mode for s in t.port_schemes(conv, 1)] == ["symmetric", "asymmetric"]   # weights
    assert t.port_schemes(conv, 1)[0].level_low == -127
    assert t.rule_for(add) is t.rules("Add")[0] and t.rule_for(nodes["relu1"]) is None
    assert t.port_schemes(nodes["gap"], 1) == ()            # ports [0]: not the axes
    w = t.port_schemes(conv, 1)
    assert t.pick(w, "performance", "weights").mode == "symmetric"
    assert t.pick(w, "accuracy", "weights").mode == "symmetric"   # runs mixed
    assert t.pick(w, "performance", "weights", {"mode": "asymmetric"}).level_low == -128
    with pytest.raises(HardwareTargetError, match="node 'x'.*not allowed"):
        t.pick(w, "performance", "weights", {"bits": 16}, where="node 'x'")
    assert t.unified_scales(nodes["conv1"]) is False and t.is_agnostic(nodes["pool1"])


def test_float_rules_keep_the_nodes_they_name_in_float(acme):
    """The hook point for placement-rule plugins: find_quantizers' float_nodes step takes callables
    ``rule(graph, target) -> node names``; a named node gets no quantizer, and none moves through it."""
    from ovquant.plugins.algorithms.placement import find_quantizers

    t = registry.lookup("hw_targets", acme())
    graph = Graph(models.conv_net())
    params = build_pipeline(None, pipeline=["MinMaxQuantization"], target_device=t.name).steps[0].params
    seen = []

    def fragile(g, target):
        seen.append((g, target))
        return ["fc", "pool1"]

    base, _, _ = find_quantizers(graph, t, params)
    qs, ignored, _ = find_quantizers(graph, t, params, float_rules=[fragile])
    assert seen == [(graph, t)] and {"fc", "pool1"} <= ignored
    consumers = lambda quantizers: {c for q in quantizers for c in q.consumers}
    assert "fc" in consumers(base) and "fc" not in consumers(qs)
    assert "relu1" in {q.source[0] for q in base} and "relu1" not in {q.source[0] for q in qs}
    assert "pool1" in {q.source[0] for q in qs}   # conv2's quantizer stays below the float MaxPool


# ---- every field has its test -------------------------------------------------------------------------------
def test_slow_int8_operations_keep_their_readers_in_float(acme):
    m = models.aca_net()
    samples = models.random_samples(m, 8, seed=5)
    pipe = build_pipeline(None, pipeline=["MinMaxQuantization", "SlowInt8Check"],
                          target_device=acme(slow_int8_operations=["MatMul"]))
    q, report = pipe.run(m.clone(), samples)
    e = report["algorithms"][-1]
    assert e["kept_in_float"] == ["MatMul"] and e["n_kept_in_float"] == 2   # fc's input and weight FQs
    assert not any(r.get_node().get_type_name() == "MatMul" for n in q.get_ordered_ops()
                   if n.get_type_name() == "FakeQuantize" for r in n.output(0).get_target_inputs())


FIELD_TESTS = {
    "HardwareTarget.slow_int8_operations": test_slow_int8_operations_keep_their_readers_in_float,
    "HardwareTarget.name": test_name_selects_the_target_case_insensitively,
    "HardwareTarget.path": test_path_is_the_registered_file,
    "HardwareTarget.operations": test_operations_an_op_type_without_a_rule_stays_float,
    "HardwareTarget.agnostic_operations": test_agnostic_operations_quantizers_move_up_through_them,
    "HardwareTarget.aliases": test_aliases_select_the_same_target,
    "HardwareTarget.description": test_description_is_shown_in_the_plugin_listing,
    "HardwareTarget.saturation_fix": test_saturation_fix_halves_the_first_layer_weights,
    "HardwareTarget.preset_aliases": test_preset_aliases_run_another_preset,
    "$schema_version": test_schema_version_other_than_1_is_refused_naming_the_plugin,
    "schemes": test_schemes_are_referenced_by_name_and_expand_in_order,
    "OpRule.activations": test_activations_absent_quantizes_only_the_weights,
    "OpRule.weights": test_weights_absent_leaves_constant_inputs_float,
    "OpRule.ports": test_ports_limit_the_quantized_inputs,
    "OpRule.unified_scales": test_unified_scales_on_add_gives_its_inputs_one_range,
    "OpRule.attributes": test_attributes_select_the_nodes_a_rule_applies_to,
    "OpRule.requires_activations": test_requires_activations_leaves_an_op_fed_a_constant_in_float,
    "OpRule.unified_weight_scales": test_unified_weight_scales_give_an_ops_weights_one_range_per_channel,
    "Scheme.bits": test_bits_set_the_levels,
    "Scheme.mode": test_mode_asymmetric_only_convolution_activations,
    "Scheme.granularity": test_granularity_pertensor_only_matmul_weights,
    "Scheme.level_low": test_level_low_and_level_high_set_the_grid,
    "Scheme.level_high": test_level_low_and_level_high_set_the_grid,
    "Scheme.unified_zeropoint": test_unified_zeropoint_gives_every_channel_one_zero_point,
}


def test_every_schema_field_has_a_test():
    """The fields of the attrs classes, and the JSON keys the loader accepts (``$schema_version`` and
    ``schemes`` are keys only), each map to a test of this module."""
    fields = {f"{cls.__name__}.{f.name}" for cls in (HardwareTarget, OpRule, Scheme) for f in attrs.fields(cls)}
    json_keys = {f"HardwareTarget.{k}" for k in hwtarget._TOP_KEYS} | {f"OpRule.{k}" for k in hwtarget._OP_KEYS} | \
        {f"Scheme.{k}" for k in hwtarget._SCHEME_KEYS}
    keys_only = {"HardwareTarget.$schema_version": "$schema_version", "HardwareTarget.schemes": "schemes"}
    wanted = fields | {keys_only.get(k, k) for k in json_keys}
    missing = sorted(wanted - set(FIELD_TESTS))
    assert not missing, f"schema fields without a test in FIELD_TESTS: {missing}"
    stale = sorted(set(FIELD_TESTS) - wanted)
    assert not stale, f"FIELD_TESTS names fields the schema does not have: {stale}"
    assert all(callable(t) and t.__name__ in globals() for t in FIELD_TESTS.values())
