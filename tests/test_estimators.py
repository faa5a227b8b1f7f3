"""Built-in range estimators (plugins/estimators): registration, numpy form vs a plain numpy reference,
and in-graph form vs numpy form on models compiled by OpenVINO."""
from __future__ import annotations

import math

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from ovquant import registry
from ovquant.statistics import Estimator, reduction_axes

NAMES = ("max", "min", "abs_max", "quantile", "abs_quantile", "mean")
QUANTILES = ("quantile", "abs_quantile")
SHAPES = ((1, 32, 56, 56), (1, 128, 384), (3, 4, 5), (6,))


def reference(name: str, x: np.ndarray, axes: tuple[int, ...], side: str, p: float) -> np.ndarray:
    """Slice by slice over the finite values, in float64."""
    kept = [a for a in range(x.ndim) if a not in axes]
    slices = np.transpose(x, kept + list(axes)).reshape([x.shape[a] for a in kept] + [-1]).astype(np.float64)
    q = p if side == "min" else 1 - p
    fn = {"max": np.max, "min": np.min, "mean": np.mean, "abs_max": lambda v: np.max(np.abs(v)),
          "quantile": lambda v: np.quantile(v, q), "abs_quantile": lambda v: np.quantile(np.abs(v), q)}[name]
    out = np.empty(slices.shape[:-1])
    for idx in np.ndindex(out.shape):
        v = slices[idx]
        v = v[np.isfinite(v)]
        out[idx] = fn(v) if v.size else np.nan
    return out


def data(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.5, 1.0, shape).astype(np.float32)


def test_registered_with_their_names():
    assert set(NAMES) <= set(registry.known("estimators"))
    for name in NAMES:
        cls = registry.lookup("estimators", name)
        assert issubclass(cls, Estimator) and cls.name == name
        assert cls.__doc__ and cls.__doc__.strip()
        assert cls.uses_outlier_prob == (name in QUANTILES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channel_axis", [None, 1, -1])
@pytest.mark.parametrize("side", ["min", "max"])
def test_numpy_form_matches_reference(name, shape, channel_axis, side):
    x = data(shape, seed=len(shape))
    axes = reduction_axes(len(shape), channel_axis)
    est = registry.make_estimator(name, side=side, outlier_prob=1e-2)
    got = est.reduce(x, axes)
    want = reference(name, x, axes, side, 1e-2)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channel_axis", [None, 1])
def test_non_finite_values_are_ignored(name, channel_axis):
    x = data((2, 6, 50), seed=3)
    rng = np.random.default_rng(4)
    for bad in (np.nan, np.inf, -np.inf):
        x[rng.random(x.shape) < 0.05] = bad
    x[1, 2, :] = np.nan  # one slice (and, per channel, one channel) with no finite value
    x[1, 2, ::2] = np.inf
    axes = reduction_axes(x.ndim, channel_axis)
    for side in ("min", "max"):
        got = registry.make_estimator(name, side=side, outlier_prob=0.05).reduce(x, axes)
        want = reference(name, x, axes, side, 0.05)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert np.isnan(got[1, 2] if channel_axis else got[0]) == (channel_axis is not None)
        assert np.isfinite(got[0]).all()


@pytest.mark.parametrize("name", QUANTILES)
def test_quantile_sides(name):
    x = data((1, 1000), seed=5) - 0.5
    lo = registry.make_estimator(name, side="min", outlier_prob=0.1).reduce(x, (1,))
    hi = registry.make_estimator(name, side="max", outlier_prob=0.1).reduce(x, (1,))
    v = np.abs(x) if name == "abs_quantile" else x
    np.testing.assert_allclose(lo, [np.quantile(v.astype(np.float64), 0.1)], rtol=1e-6)
    np.testing.assert_allclose(hi, [np.quantile(v.astype(np.float64), 0.9)], rtol=1e-6)
    assert lo[0] < hi[0]


def graph_value(est, compiled, x: np.ndarray, n_parts: int):
    """What the engine makes of ``est``'s in-graph outputs for the one sample ``x``: from_graph of the
    one output, or from_graph_parts of several (the sample axis added and taken off again)."""
    res = compiled(x)
    if n_parts == 1:
        return est.from_graph(res[0])
    return np.asarray(est.from_graph_parts(*[res[i][None] for i in range(n_parts)]))[0]


def compile_graph(est, param, axes):
    out = est.graph_reduce(param.output(0), axes)
    if out is None:
        return None, 0
    outs = list(out) if isinstance(out, tuple) else [out]
    assert all(o.get_partial_shape().is_static for o in outs)
    model = ov.Model([ops.result(o) for o in outs], [param])
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), len(outs)


def run_graph(est, x: np.ndarray, axes):
    compiled, n = compile_graph(est, ops.parameter(list(x.shape), np.float32), axes)
    return None if compiled is None else graph_value(est, compiled, x, n)


GRAPH_CASES = [(name, "max", 1e-4) for name in NAMES if name not in QUANTILES] + [
    (name, side, p) for name in QUANTILES for side in ("min", "max") for p in (1e-4, 1e-2)]


@pytest.mark.parametrize("name,side,p", GRAPH_CASES)
@pytest.mark.parametrize("shape", [(1, 32, 56, 56), (1, 128, 384), (2, 3, 7)])
@pytest.mark.parametrize("channel_axis", [None, 1, -1])
def test_graph_form_matches_numpy_form(name, side, p, shape, channel_axis):
    x = data(shape, seed=6) - (0.5 if name in QUANTILES else 0.0)
    axes = reduction_axes(len(shape), channel_axis)
    est = registry.make_estimator(name, side=side, outlier_prob=p)
    got = run_graph(est, x, axes)
    assert got is not None
    want = est.reduce(x, axes)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if name in QUANTILES:
        n = math.prod(shape[a] for a in axes)
        assert (est.n, est.k) == (n, min(math.ceil(p * (n - 1)) + 2, n))


@pytest.mark.parametrize("name", QUANTILES)
def test_graph_quantile_falls_back_when_tail_too_big(name):
    x = data((1, 128, 384), seed=7)
    est = registry.make_estimator(name, side="max", outlier_prob=0.05)  # k = ceil(0.05 * 49151) + 2 = 2460
    assert est.graph_reduce(ops.parameter(list(x.shape), np.float32).output(0), (1, 2)) is None
    # the same tail per channel fits: N = 128, k = 9
    assert run_graph(est, x, (1,)) is not None


@pytest.mark.parametrize("name", QUANTILES)
def test_graph_quantile_falls_back_on_dynamic_shape(name):
    param = ops.parameter(ov.PartialShape([-1, 16, 8]), np.float32)
    est = registry.make_estimator(name, side="min", outlier_prob=1e-4)
    assert est.graph_reduce(param.output(0), (1, 2)) is None


@pytest.mark.parametrize("name", ["min", "max", "abs_max", "mean"])
def test_graph_dynamic_estimators_match_numpy_on_dynamic_shapes(name):
    """The estimators that declare ``graph_dynamic`` reduce in graph on a tensor with dynamic dims (width
    here, as an OCR model's): one compiled model, inputs of two widths, each equal to the numpy form."""
    est = registry.make_estimator(name)
    assert type(est).graph_dynamic
    param = ops.parameter(ov.PartialShape([1, 16, 8, -1]), np.float32)
    axes = (0, 2, 3)                                  # per channel: the dynamic width is reduced
    compiled, n = compile_graph(est, param, axes)
    assert compiled is not None
    for w, seed in ((13, 1), (40, 2)):
        x = data((1, 16, 8, w), seed=seed) - 0.5
        np.testing.assert_allclose(graph_value(est, compiled, x, n), est.reduce(x, axes), rtol=1e-5, atol=1e-6)
