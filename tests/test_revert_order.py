"""Accuracy control's revert order: multiply-accumulates per compute op against a hand count, and the
order by error per int8 work lost on a real quantized model."""
import numpy as np
import openvino as ov
import openvino.opset13 as ops

import ovquant
from ovquant.revert_order import macs, speed_aware_order


def _net():
    rng = np.random.default_rng(0)
    x = ops.parameter([1, 4, 16, 16], np.float32, name="x")
    c1 = ops.convolution(x, ops.constant(rng.standard_normal((8, 4, 3, 3)).astype(np.float32)),
                         [1, 1], [1, 1], [1, 1], [1, 1], name="conv1")
    r1 = ops.relu(c1)
    dw = ops.group_convolution(r1, ops.constant(rng.standard_normal((8, 1, 1, 3, 3)).astype(np.float32)),
                               [2, 2], [1, 1], [1, 1], [1, 1], name="dw")
    r2 = ops.relu(dw)
    flat = ops.reshape(r2, [1, 8 * 8 * 8], False)
    fc = ops.matmul(flat, ops.constant(rng.standard_normal((512, 10)).astype(np.float32)), False, False, name="fc")
    return ov.Model([fc], [x], "net")


def test_macs_match_a_hand_count():
    m = _net()
    by = {n.get_friendly_name(): n for n in m.get_ordered_ops()}
    assert macs(by["conv1"]) == (8 * 16 * 16) * (4 * 3 * 3)        # outputs x (in channels x kernel)
    assert macs(by["dw"]) == (8 * 8 * 8) * (3 * 3)                  # depthwise: one input channel each
    assert macs(by["fc"]) == 10 * 512
    assert macs(by["x"]) == 0


def test_order_is_error_per_mac():
    m = _net()
    data = [np.random.default_rng(i).standard_normal((1, 4, 16, 16)).astype(np.float32) for i in range(8)]
    q = ovquant.quantize(m, data, preset="performance")
    rep = ovquant.analyze_sensitivity(m, q, data, n=8, timing=False)
    rows = rep["quantizers"]
    order = speed_aware_order(q, rows, m)
    assert sorted(order) == sorted(r["name"] for r in rows)
    from ovquant.sensitivity import find_quantizers, layers_reading
    cost = {qz["name"]: sum(macs(n) for n in layers_reading(qz["quantized"])) for qz in find_quantizers(q, m)}
    eps = 0.01 * np.mean([cost[r["name"]] for r in rows])
    err = {r["name"]: r["error"] for r in rows}
    dens = [err[n] / (cost[n] + eps) for n in order]
    assert all(a >= b for a, b in zip(dens, dens[1:]))
    assert any(cost[n] > 0 for n in order) and len(set(cost.values())) > 1


def _brute(n, drop, max_drop):
    return next(k for k in range(n + 1) if k == n or drop(k) <= max_drop)


def test_guided_search_finds_the_fewest_with_few_validations():
    from ovquant.accuracy_control import fewest
    from ovquant.revert_order import guided_fewest

    n, max_drop = 200, 0.01
    err = lambda k: 0.5 * (1 - k / n) ** 3                       # noqa: E731  label-free error, decreasing
    for scale in (0.03, 0.1, 0.5):
        drop = lambda k, s=scale: s * (1 - k / n) ** 3            # noqa: E731  the metric follows the error
        calls = []
        k, seen = guided_fewest(n, lambda j: calls.append(j) or drop(j), err, max_drop, drop(0))
        assert k == _brute(n, drop, max_drop)
        _, plain = fewest(n, lambda j: drop(j) <= max_drop)
        assert len(calls) == len(seen) and len(calls) < len(plain), (scale, calls, sorted(plain))


def test_guided_search_is_right_when_the_error_misleads():
    from ovquant.revert_order import guided_fewest

    n, max_drop = 64, 0.01
    rng = np.random.default_rng(3)
    noise = rng.random(n + 1)
    for true_k in (1, 5, 31, 63):
        drop = lambda k, t=true_k: 0.02 if k < t else 0.0        # noqa: E731  a step at true_k
        calls = []
        k, _ = guided_fewest(n, lambda j: calls.append(j) or drop(j), lambda j: float(noise[j]), max_drop, 0.02)
        assert k == true_k
        assert len(calls) <= 2 * int(np.ceil(np.log2(n))) + 2, calls


def test_a_drop_equal_to_max_drop_passes_despite_binary_rounding():
    from ovquant.revert_order import guided_fewest

    drop = lambda k: 0.93 - (0.8975, 0.92, 0.93)[min(k, 2)]     # noqa: E731  0.93 - 0.92 = 0.0100000000000000089
    k, _ = guided_fewest(2, drop, lambda k: 1.0 - k / 2, 0.01, drop(0), tol=1e-9)
    assert k == 1
