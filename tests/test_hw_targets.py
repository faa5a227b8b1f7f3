"""Shipped hardware targets (hw_targets/*.json), the target schema validator, and targets from plugins."""
from __future__ import annotations

import copy
import json
from importlib.resources import files

import pytest

from ovquant import hookimpl, registry as plugins
from ovquant.errors import PluginError
from ovquant.hwtarget import GRANULARITIES, MODES, HardwareTarget, Scheme, load_target

SHIPPED = ("CPU", "GPU", "NPU")
INPUT_ONLY = ("Power", "AvgPool", "NormalizeL2", "ReduceMean", "Interpolate", "MVN")
WEIGHTED = ("Convolution", "GroupConvolution", "DepthwiseConvolution", "ConvolutionBackpropData", "MatMul")
ELTWISE = ("Add", "Multiply", "Subtract", "Divide", "Maximum", "Minimum", "FloorMod",
           "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual",
           "LogicalAnd", "LogicalOr", "LogicalXor", "LogicalNot")
AGNOSTIC = ("MaxPool", "ReduceMax", "Reshape", "Squeeze", "Unsqueeze", "Split", "VariadicSplit", "Transpose",
            "Tile", "StridedSlice", "ShuffleChannels", "Broadcast", "Pad", "Gather", "DepthToSpace",
            "SpaceToDepth", "Concat")


def target(name: str) -> HardwareTarget:
    return plugins.lookup("hw_targets", name)


def only_rule(t: HardwareTarget, op_type: str):
    rules = t.rules(op_type)
    assert len(rules) == 1, f"{t.name} {op_type}: {rules}"
    return rules[0]


def pick(rule, preset: str) -> tuple[Scheme, Scheme | None]:
    """The (activation, weight) candidates a preset picks, as POT's _apply_preset_rule does."""
    act = rule.activations[0] if preset == "performance" else rule.activations[-1]
    wt = None
    if rule.weights:
        wt = rule.weights[-1] if preset == "accuracy" else rule.weights[0]
    return act, wt


# ---- the shipped targets, through the plugin registry ----------------------------------------------------
def test_every_shipped_json_is_registered_under_its_name():
    shipped = sorted(f.name for f in files("ovquant.hw_targets").iterdir() if f.name.endswith(".json"))
    assert shipped == ["cpu.json", "gpu.json", "npu.json"]
    for fname in shipped:
        t = target(fname[:-5].upper())
        assert t.path.endswith(fname)
        assert t.name == fname[:-5].upper()
        assert t.description
    assert set(plugins.known("hw_targets")) >= {"CPU", "GPU", "NPU", "VPU", "ANY", "CPU_SPR"}
    entry = plugins.get_registry().get("hw_targets", "CPU")
    assert entry.plugin == "ovquant.plugins.hw_targets"


def test_registry_matches_a_direct_load():
    for name in SHIPPED:
        direct = load_target(files("ovquant.hw_targets") / f"{name.lower()}.json")
        reg = target(name)
        assert direct.operations == reg.operations
        assert direct.agnostic_operations == reg.agnostic_operations


@pytest.mark.parametrize("alias", ["ANY", "any", "CPU_SPR", "cpu_spr", "cpu", "Cpu"])
def test_cpu_aliases_and_case_insensitive_names(alias):
    assert target(alias) is target("CPU")
    assert target(alias).name == "CPU"


def test_gpu_and_npu_are_distinct_targets_and_case_insensitive():
    assert target("gpu") is target("GPU") and target("GPU").name == "GPU"
    assert target("nPu") is target("NPU") and target("NPU").name == "NPU"
    assert target("vpu") is target("NPU") and target("NPU").aliases == ("VPU",)   # VPU: NPU's old name
    assert target("GPU") is not target("CPU")


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(KeyError, match="XPU.*CPU.*GPU.*NPU.*VPU"):
        target("XPU")


def test_schema_version_is_declared_in_every_shipped_file():
    for name in SHIPPED:
        data = json.loads((files("ovquant.hw_targets") / f"{name.lower()}.json").read_text(encoding="utf-8"))
        assert data["$schema_version"] == 1


# ---- candidate order and presets ----------------------------------------------------------------------
def test_cpu_convolution_candidate_order():
    conv = only_rule(target("CPU"), "Convolution")
    acts = [(s.bits, s.mode, s.granularity) for s in conv.activations]
    assert acts == [(8, "symmetric", "pertensor"), (8, "asymmetric", "pertensor")]
    w0, w1 = conv.weights
    assert (w0.bits, w0.mode, w0.granularity, w0.level_low, w0.level_high) == (8, "symmetric", "perchannel", -127, 127)
    assert w0.levels == 255
    assert (w1.bits, w1.mode, w1.granularity, w1.level_low, w1.level_high) == (8, "asymmetric", "perchannel", -128, 127)
    assert w1.levels == 256
    assert conv.ports is None  # data and weights


@pytest.mark.parametrize("name", ["CPU", "GPU"])
def test_cpu_gpu_presets_follow_pot(name):
    conv = only_rule(target(name), "Convolution")
    act, wt = pick(conv, "performance")
    assert (act.mode, wt.mode, wt.level_low) == ("symmetric", "symmetric", -127)
    act, wt = pick(conv, "mixed")
    assert (act.mode, wt.mode, wt.level_low) == ("asymmetric", "symmetric", -127)
    act, wt = pick(conv, "accuracy")
    assert (act.mode, wt.mode, wt.level_low) == ("asymmetric", "asymmetric", -128)


@pytest.mark.parametrize("name", ["CPU", "GPU"])
def test_depthwise_convolution_is_per_channel(name):
    t = target(name)
    dw = only_rule(t, "DepthwiseConvolution")
    assert dw.activations and all(s.granularity == "perchannel" for s in dw.activations)
    assert [s.mode for s in dw.activations] == ["symmetric", "asymmetric"]
    assert dw.weights == only_rule(t, "Convolution").weights
    # a plain GroupConvolution is per tensor
    assert all(s.granularity == "pertensor" for s in only_rule(t, "GroupConvolution").activations)


def test_gpu_is_cpu_without_recurrent_ops_and_saturation_fix():
    cpu, gpu = target("CPU"), target("GPU")
    assert gpu.rules("LSTMSequence") == [] and gpu.rules("GRUSequence") == []
    assert set(cpu.operations) - set(gpu.operations) == {"LSTMSequence", "GRUSequence"}
    assert set(gpu.operations) <= set(cpu.operations)
    for op in gpu.operations:
        assert gpu.rules(op) == cpu.rules(op), op
    assert gpu.agnostic_operations == cpu.agnostic_operations
    assert cpu.saturation_fix is True and gpu.saturation_fix is False
    assert target("VPU").saturation_fix is False
    assert gpu.aliases == () and cpu.aliases == ("ANY", "CPU_SPR")


def test_cpu_recurrent_ops_ports_and_weights():
    cpu = target("CPU")
    lstm = only_rule(cpu, "LSTMSequence")
    assert lstm.ports == (0, 1, 4, 5)
    assert [(s.mode, s.level_low) for s in lstm.weights] == [("symmetric", -127)]
    gru = only_rule(cpu, "GRUSequence")
    assert gru.ports == (0, 1, 3, 4)
    assert dict(gru.attributes) == {"linear_before_reset": False}
    assert [(s.mode, s.level_low) for s in gru.weights] == [("symmetric", -127)]


def _gru_attributes(linear_before_reset: bool) -> dict:
    ov = pytest.importorskip("openvino")
    import numpy as np
    o = ov.opset13
    x, h = o.parameter([1, 4, 3], np.float32), o.parameter([1, 1, 5], np.float32)
    lens = o.constant(np.array([4], np.int32))
    w, r = o.constant(np.zeros((1, 15, 3), np.float32)), o.constant(np.zeros((1, 15, 5), np.float32))
    b = o.constant(np.zeros((1, 20 if linear_before_reset else 15), np.float32))  # 4 or 3 gates x hidden
    node = o.gru_sequence(x, h, lens, w, r, b, 5, "forward", linear_before_reset=linear_before_reset)
    assert node.get_type_name() == "GRUSequence"
    return node.get_attributes()


def test_gru_attribute_filter_matches_real_openvino_attributes():
    gru = only_rule(target("CPU"), "GRUSequence")

    def matches(node_attrs):
        return all(k in node_attrs and node_attrs[k] == v for k, v in gru.attributes)

    assert matches(_gru_attributes(False))
    assert not matches(_gru_attributes(True))


@pytest.mark.parametrize("name", SHIPPED)
def test_op_sets(name):
    t = target(name)
    for op in WEIGHTED:
        rule = only_rule(t, op)
        assert rule.activations and rule.weights and rule.ports is None, op
    for op in ELTWISE:
        rule = only_rule(t, op)
        assert rule.activations and not rule.weights and rule.ports is None, op
    for op in INPUT_ONLY:
        rule = only_rule(t, op)
        assert rule.ports == (0,) and rule.activations and not rule.weights, op
    concat = only_rule(t, "Concat")
    assert concat.unified_scales is True and concat.activations == () and concat.weights == ()
    sequences = {"LSTMSequence", "GRUSequence"} & set(t.operations)   # CPU: X with H, W with R (POT's lists)
    assert not any(r.unified_scales for op, rs in t.operations.items() if op != "Concat" and op not in sequences
                   for r in rs)
    for op in sequences:
        assert all(r.unified_scales and r.unified_weight_scales for r in t.operations[op]), op
    assert not any(r.unified_weight_scales for op, rs in t.operations.items() if op not in sequences for r in rs)


@pytest.mark.parametrize("name", SHIPPED)
def test_agnostic_operations(name):
    t = target(name)
    for op in AGNOSTIC:
        assert t.is_agnostic(op), op
    for op in ("Slice", "Relu", "ReLU", "Convolution", "MatMul", "Add", "AvgPool", "ReduceMean", "Flatten", "Crop"):
        assert not t.is_agnostic(op), op
    # an agnostic op never has activation schemes of its own (Concat is both, with unified scales
    # only); Gather may quantize a constant table it reads (an embedding) as weights
    for op in t.agnostic_operations:
        for rule in t.rules(op):
            assert not rule.activations, op
            assert not rule.weights or op == "Gather", op


def test_vpu_schemes():
    vpu = target("VPU")
    for op, rules in vpu.operations.items():
        for rule in rules:
            for s in rule.activations:
                assert (s.bits, s.mode, s.granularity) == (8, "asymmetric", "pertensor"), op
    conv = only_rule(vpu, "Convolution")
    assert len(conv.activations) == 1
    ws = [(s.bits, s.mode, s.level_low, s.level_high, s.unified_zeropoint) for s in conv.weights]
    assert ws[0] == (8, "symmetric", -127, 127, False)        # performance / mixed
    assert ws[-1] == (8, "asymmetric", -128, 127, True)       # accuracy stays 8-bit
    assert (4, "symmetric", -7, 7, False) in ws and (2, "symmetric", -1, 1, False) in ws
    assert [b for b, *_ in ws].index(4) > 0 and [b for b, *_ in ws].index(2) > 0
    assert all(s.unified_zeropoint == (s.mode == "asymmetric") for s in conv.weights)
    for op in WEIGHTED:
        assert only_rule(vpu, op).weights == conv.weights, op


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scheme_is_sane(name):
    for op, rules in target(name).operations.items():
        for rule in rules:
            for s in rule.activations + rule.weights:
                assert s.mode in MODES and s.granularity in GRANULARITIES
                assert s.levels <= 2 ** s.bits, (op, s)
                if s.level_low is not None:
                    assert s.level_low < 0 < s.level_high, (op, s)
                    if s.mode == "symmetric":
                        assert s.level_low == -s.level_high, (op, s)
            for s in rule.weights:
                assert s.granularity == "perchannel", (op, s)


# ---- malformed targets ---------------------------------------------------------------------------------
BASE = {
    "$schema_version": 1,
    "name": "TEST",
    "aliases": ["TEST2"],
    "description": "d",
    "saturation_fix": False,
    "schemes": {
        "q8_a": {"bits": 8, "mode": ["symmetric", "asymmetric"], "granularity": "pertensor"},
        "q8_w": {"bits": 8, "mode": "symmetric", "granularity": "perchannel", "level_low": -127, "level_high": 127},
    },
    "operations": {
        "Convolution": {"activations": "q8_a", "weights": ["q8_w"]},
        "Power": {"activations": "q8_a", "ports": [0]},
        "Concat": {"unified_scales": True},
        "GRUSequence": [{"activations": "q8_a", "attributes": {"linear_before_reset": False}}],
    },
    "agnostic_operations": ["MaxPool"],
}


def _set(path: tuple, value):
    def mutate(d):
        *parents, last = path
        for k in parents:
            d = d[k]
        d[last] = value
    return mutate


def _drop(path: tuple):
    def mutate(d):
        *parents, last = path
        for k in parents:
            d = d[k]
        del d[last]
    return mutate


# (id, mutation of BASE, key path the message must name, words the problem must contain)
MALFORMED = [
    # accepted before (found from the outside): a float version, empty rule and scheme lists, an agnostic op
    # with activation schemes of its own
    ("float-version", _set(("$schema_version",), 1.0), "$schema_version", "1.0 is not supported"),
    ("empty-rule-list", _set(("operations", "Convolution"), []), "operations.Convolution", "an empty list of rules"),
    ("empty-scheme-list", _set(("operations", "Convolution", "activations"), []),
     "operations.Convolution.activations", "an empty list of schemes"),
    ("agnostic-with-schemes", _set(("agnostic_operations",), ["MaxPool", "Convolution"]), "agnostic_operations[1]",
     "'Convolution' has activation schemes in operations"),
    ("unknown-top-key", _set(("colour",), "red"), "colour", "unknown key"),
    ("unknown-scheme-key", _set(("schemes", "q8_a", "bitz"), 8), "schemes.q8_a.bitz", "unknown key"),
    ("unknown-op-key", _set(("operations", "Power", "scales"), "unified"), "operations.Power.scales", "unknown key"),
    ("unknown-scheme-ref", _set(("operations", "Convolution", "activations"), "q9_a"),
     "operations.Convolution.activations", "unknown scheme 'q9_a'"),
    ("unknown-scheme-ref-in-list", _set(("operations", "Convolution", "weights"), ["q8_w", "q8_w_asym"]),
     "operations.Convolution.weights[1]", "unknown scheme 'q8_w_asym'"),
    ("bad-mode", _set(("schemes", "q8_a", "mode"), ["symmetric", "sideways"]), "schemes.q8_a.mode", "'sideways'"),
    ("bad-granularity", _set(("schemes", "q8_a", "granularity"), "perrow"), "schemes.q8_a.granularity", "'perrow'"),
    ("empty-mode-list", _set(("schemes", "q8_a", "mode"), []), "schemes.q8_a.mode", "empty list"),
    ("level-low-not-below-high", _set(("schemes", "q8_w", "level_low"), 127), "schemes.q8_w", "must be below"),
    ("level-low-alone", _drop(("schemes", "q8_w", "level_high")), "schemes.q8_w", "go together"),
    ("levels-do-not-fit-bits", _set(("schemes", "q8_w", "bits"), 4), "schemes.q8_w", "do not fit in 4 bits"),
    ("levels-do-not-fit-one-of-bits", _set(("schemes", "q8_w", "bits"), [8, 4]), "schemes.q8_w", "do not fit in 4 bits"),
    ("bits-out-of-range", _set(("schemes", "q8_a", "bits"), 0), "schemes.q8_a.bits", "outside 1..16"),
    ("bits-as-string", _set(("schemes", "q8_a", "bits"), "8"), "schemes.q8_a.bits", "expected an integer"),
    ("bits-as-bool", _set(("schemes", "q8_a", "bits"), True), "schemes.q8_a.bits", "expected an integer"),
    ("level-as-string", _set(("schemes", "q8_w", "level_low"), "-127"), "schemes.q8_w.level_low", "expected an integer"),
    ("missing-bits", _drop(("schemes", "q8_a", "bits")), "schemes.q8_a", "missing key 'bits'"),
    ("scheme-not-object", _set(("schemes", "q8_a"), 8), "schemes.q8_a", "must be an object"),
    ("inline-scheme-missing-granularity", _set(("operations", "Convolution", "activations"),
                                               {"bits": 8, "mode": "symmetric"}),
     "operations.Convolution.activations", "missing key 'granularity'"),
    ("scheme-ref-wrong-type", _set(("operations", "Convolution", "weights"), [8]),
     "operations.Convolution.weights[0]", "expected a scheme name or object"),
    ("negative-port", _set(("operations", "Power", "ports"), [-1]), "operations.Power.ports", "port numbers"),
    ("port-as-string", _set(("operations", "Power", "ports"), "0"), "operations.Power.ports", "port numbers"),
    ("port-as-bool", _set(("operations", "Power", "ports"), [True]), "operations.Power.ports", "port numbers"),
    ("empty-ports", _set(("operations", "Power", "ports"), []), "operations.Power.ports", "non-empty"),
    ("requires-not-list", _set(("operations", "Power", "requires_activations"), 0),
     "operations.Power.requires_activations", "list of input port numbers"),
    ("requires-outside-ports", _set(("operations", "Power", "requires_activations"), [1]),
     "operations.Power.requires_activations", "port 1 is not in ports"),
    ("unified-scales-as-string", _set(("operations", "Concat", "unified_scales"), "all"),
     "operations.Concat.unified_scales", "true or false"),
    ("unified-weight-scales-as-list", _set(("operations", "Power", "unified_weight_scales"), [4, 5]),
     "operations.Power.unified_weight_scales", "true or false"),
    ("attributes-not-object", _set(("operations", "GRUSequence", 0, "attributes"), ["linear_before_reset"]),
     "operations.GRUSequence[0].attributes", "expected an object"),
    ("op-rule-not-object", _set(("operations", "Power"), "q8_a"), "operations.Power", "expected an object"),
    ("operations-empty", _set(("operations",), {}), "operations", "non-empty"),
    ("operations-missing", _drop(("operations",)), "operations", "non-empty"),
    ("schemes-as-list", _set(("schemes",), []), "schemes", "expected an object"),
    ("name-missing", _drop(("name",)), "name", "non-empty string"),
    ("name-not-string", _set(("name",), 5), "name", "non-empty string"),
    ("aliases-as-string", _set(("aliases",), "ANY"), "aliases", "list of names"),
    ("agnostic-as-string", _set(("agnostic_operations",), "MaxPool"), "agnostic_operations", "list of op types"),
    ("saturation-fix-as-string", _set(("saturation_fix",), "first_layer"), "saturation_fix", "true or false"),
    ("description-not-string", _set(("description",), ["d"]), "description", "expected a string"),
    ("unified-zeropoint-not-bool", _set(("schemes", "q8_w", "unified_zeropoint"), "yes"),
     "schemes.q8_w.unified_zeropoint", "true or false"),
    ("schema-version-2", _set(("$schema_version",), 2), "$schema_version", "not supported"),
    ("schema-version-as-bool", _set(("$schema_version",), True), "$schema_version", "not supported"),
]


def test_base_target_is_valid(tmp_path):
    p = tmp_path / "base.json"
    p.write_text(json.dumps(BASE), encoding="utf-8")
    t = load_target(p)
    assert t.name == "TEST" and t.path == str(p)
    assert t.rules("GRUSequence")[0].attributes == (("linear_before_reset", False),)


@pytest.mark.parametrize("case_id, mutate, key_path, problem", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_target_file(tmp_path, case_id, mutate, key_path, problem):
    data = copy.deepcopy(BASE)
    mutate(data)
    p = tmp_path / f"{case_id}.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_target(p)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}: {key_path}: "), msg
    assert problem in msg, msg
    # the same dict, given directly, reports the same key path
    with pytest.raises(ValueError) as info:
        load_target(data)
    assert str(info.value).startswith(f"<dict>: {key_path}: ")


def test_malformed_top_level_is_not_an_object(tmp_path):
    p = tmp_path / "list.json"
    p.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list\.json: <top>: .*JSON object"):
        load_target(p)


def test_not_json(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"name": "X", "operations": {"Add": {}},}', encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_target(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: not valid JSON: ") and "line 1" in msg and "\n" not in msg


def test_not_utf8(tmp_path):
    p = tmp_path / "binary.json"
    p.write_bytes(b"\xff\xfe\x00{}")
    with pytest.raises(ValueError) as info:
        load_target(p)
    assert str(info.value).startswith(f"{p}: not valid JSON: ")


def test_missing_file(tmp_path):
    p = tmp_path / "nowhere" / "npu.json"
    with pytest.raises(ValueError) as info:
        load_target(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: cannot read: ") and "\n" not in msg
    with pytest.raises(ValueError, match=r"npu\.json: cannot read"):
        load_target(str(p))


# ---- targets from plugins ------------------------------------------------------------------------------
class TargetPlugin:
    """A plugin object that registers the given target files."""

    def __init__(self, *paths):
        self.paths = paths

    @hookimpl
    def register_hw_targets(self, register):
        for p in self.paths:
            register(p)


@pytest.fixture
def use_plugin():
    names = []

    def add(plugin, name):
        names.append(plugins.register_plugin(plugin, name=name))
        return names[-1]

    yield add
    for n in reversed(names):
        plugins.unregister_plugin(n)
    # the built-ins work again once the test plugins are gone
    assert plugins.lookup("hw_targets", "CPU").name == "CPU"


def _write(tmp_path, fname, **changes):
    data = copy.deepcopy(BASE)
    data.update(changes)
    p = tmp_path / fname
    p.write_text(json.dumps(data), encoding="utf-8")
    return p


def test_plugin_target_is_registered_and_removed(tmp_path, use_plugin):
    p = _write(tmp_path, "tpu.json", name="TPU", aliases=["TPU4000"])
    use_plugin(TargetPlugin(p), "acme_tpu_plugin")
    assert target("tpu").path == str(p)
    assert target("TPU4000") is target("TPU")
    assert plugins.get_registry().get("hw_targets", "TPU").plugin == "acme_tpu_plugin"
    plugins.unregister_plugin("acme_tpu_plugin")
    with pytest.raises(KeyError):
        target("TPU")
    plugins.register_plugin(TargetPlugin(p), name="acme_tpu_plugin")  # the fixture unregisters it again


def test_plugin_with_malformed_target_raises_plugin_error(tmp_path, use_plugin):
    data = copy.deepcopy(BASE)
    data["schemes"]["q8_w"]["bits"] = 4
    p = tmp_path / "bad_target.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    use_plugin(TargetPlugin(p), "acme_bad_plugin")
    with pytest.raises(PluginError) as info:
        plugins.get_registry()
    msg = str(info.value)
    assert "'acme_bad_plugin'" in msg
    assert f"{p}: schemes.q8_w: levels [-127,127] do not fit in 4 bits" in msg
    assert "\n" not in msg


def test_plugin_with_missing_target_file_raises_plugin_error(tmp_path, use_plugin):
    p = tmp_path / "gone.json"
    use_plugin(TargetPlugin(p), "acme_gone_plugin")
    with pytest.raises(PluginError, match=r"'acme_gone_plugin'.*gone\.json: cannot read"):
        plugins.get_registry()


def test_two_plugins_registering_the_same_target_name(tmp_path, use_plugin):
    a = _write(tmp_path, "a.json", name="DupDev", aliases=[])
    b = _write(tmp_path, "b.json", name="DUPDEV", aliases=[])   # names are case-insensitive
    use_plugin(TargetPlugin(a), "first_dup_plugin")
    use_plugin(TargetPlugin(b), "second_dup_plugin")
    with pytest.raises(PluginError) as info:
        plugins.get_registry()
    msg = str(info.value)
    assert "registered twice" in msg
    assert "'first_dup_plugin'" in msg and "'second_dup_plugin'" in msg


def test_an_alias_equal_to_the_targets_own_name_says_so(tmp_path, use_plugin):
    """It said the target was registered twice by the same plugin."""
    p = _write(tmp_path, "bt.json", name="BT", aliases=["bt"])
    use_plugin(TargetPlugin(p), "self_alias_plugin")
    with pytest.raises(PluginError) as info:
        plugins.get_registry()
    assert str(info.value) == ("plugin 'self_alias_plugin': hw target 'bt' names the same hw target twice (an alias "
                               "equal to its name, or a repeated alias)")


def test_plugin_target_cannot_take_a_builtin_alias(tmp_path, use_plugin):
    p = _write(tmp_path, "any.json", name="MYANY", aliases=["any"])
    use_plugin(TargetPlugin(p), "alias_thief_plugin")
    with pytest.raises(PluginError) as info:
        plugins.get_registry()
    msg = str(info.value)
    assert "'alias_thief_plugin'" in msg and "'ovquant.plugins.hw_targets'" in msg
