"""Built-in aggregators (plugins/aggregators): registration, results vs plain numpy references, streaming
updates, non-finite values, and the Hodges-Lehmann estimator vs brute force."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ovquant import registry
from ovquant.statistics import Aggregator

STREAMING = ("mean", "max", "min")
STORING = ("median", "mean_no_outliers", "median_no_outliers", "hl_estimator")
NAMES = STREAMING + STORING


def no_outliers(fn, alpha):
    def f(v):  # POT: keep the values inside [quantile(alpha), quantile(1 - alpha)]; all if none is left
        lo, hi = np.quantile(v, [alpha, 1 - alpha])
        kept = v[(v >= lo) & (v <= hi)]
        return fn(kept if kept.size else v)
    return f


def hodges_lehmann(v):
    if v.size == 1:
        return v[0]
    i, j = np.tril_indices(v.size, -1)  # i > j
    return 0.5 * np.median(v[i] + v[j])


def reference(name: str, x: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    """Element by element over the finite values of the sample axis, in float64."""
    fn = {"mean": np.mean, "max": np.max, "min": np.min, "median": np.median,
          "mean_no_outliers": no_outliers(np.mean, alpha), "median_no_outliers": no_outliers(np.median, alpha),
          "hl_estimator": hodges_lehmann}[name]
    x = np.asarray(x, np.float64)
    out = np.empty(x.shape[1:])
    for idx in np.ndindex(out.shape):
        v = x[(slice(None),) + idx]
        v = v[np.isfinite(v)]
        out[idx] = fn(v) if v.size else np.nan
    return out


def aggregate(name: str, x: np.ndarray, chunks=1, **params) -> np.ndarray:
    agg = registry.make_aggregator(name, **params)
    for part in np.array_split(x, chunks):
        agg.update(part)
    return agg.result()


def test_registered_with_their_names():
    assert set(NAMES) <= set(registry.known("aggregators"))
    for name in NAMES:
        cls = registry.lookup("aggregators", name)
        assert issubclass(cls, Aggregator) and cls.name == name
        assert cls.__doc__ and cls.__doc__.strip()
        assert cls.needs_all_samples == (name in STORING)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1,), (2,), (7,), (300,), (1, 5), (40, 16), (300, 3)])
def test_matches_reference(name, shape):
    x = np.random.default_rng(shape[0]).normal(0.3, 1.0, shape).astype(np.float32)
    got = aggregate(name, x)
    want = reference(name, x)
    assert got.dtype == np.float32 and got.shape == want.shape == shape[1:]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_several_updates_give_the_same_result(name):
    x = np.random.default_rng(1).normal(size=(103, 4)).astype(np.float32)
    once = aggregate(name, x)
    np.testing.assert_allclose(aggregate(name, x, chunks=10), once, rtol=1e-6)
    np.testing.assert_allclose(aggregate(name, x, chunks=len(x)), once, rtol=1e-6)
    np.testing.assert_allclose(once, reference(name, x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_values_are_ignored(name):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        x[rng.random(x.shape) < 0.05] = bad
    x[:, 3] = np.where(np.arange(60) % 2, np.nan, np.inf)  # no finite value at all
    x[:, 4] = np.nan
    x[17, 4] = 2.5  # a single finite value
    got = aggregate(name, x, chunks=3)
    np.testing.assert_allclose(got, reference(name, x), rtol=1e-6, atol=1e-7)
    assert np.isfinite(got[:3]).all() and np.isnan(got[3]) and got[4] == 2.5


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_aggregators_take_0d_values_as_one_sample(name):
    # the estimators reduce rank-0/1 tensors (per tensor) to 0-d values
    agg = registry.make_aggregator(name)
    for v in (1.0, 4.0, np.nan, 2.5):
        agg.update(np.array(v, np.float32))
    assert agg.result() == reference(name, np.array([1.0, 4.0, np.nan, 2.5]))


@pytest.mark.parametrize("name", NAMES)
def test_no_samples_is_an_error(name):
    with pytest.raises(ValueError):
        registry.make_aggregator(name).result()


def test_mean_accumulates_in_float64():
    agg = registry.make_aggregator("mean")
    agg.update(np.array([2.0 ** 24], np.float32))
    for _ in range(999):
        agg.update(np.array([1.0], np.float32))  # a float32 running sum would stay at 2**24
    assert agg.result() == np.float32((2 ** 24 + 999) / 1000)


@pytest.mark.parametrize("name", ["mean_no_outliers", "median_no_outliers"])
def test_no_outliers_alpha(name):
    x = np.random.default_rng(3).standard_cauchy((200, 3))
    got = aggregate(name, x, alpha=0.1)
    np.testing.assert_allclose(got, reference(name, x, alpha=0.1), rtol=1e-6)


def test_no_outliers_alpha_changes_the_trimmed_mean():
    x = np.random.default_rng(3).standard_cauchy((200, 3))
    assert not np.allclose(aggregate("mean_no_outliers", x, alpha=0.1), aggregate("mean_no_outliers", x))


def test_no_outliers_drop_the_extremes():
    # 200 samples: quantile(0.01) lies between sorted[1] and sorted[2], quantile(0.99) between sorted[197]
    # and sorted[198], so sorted[2:198] are kept
    x = np.concatenate([[1e6], np.linspace(0, 1, 199)])
    kept = np.sort(x)[2:198]
    assert aggregate("mean_no_outliers", x) == pytest.approx(kept.mean(), rel=1e-6)
    assert aggregate("median_no_outliers", x) == pytest.approx(np.median(kept), rel=1e-6)
    assert aggregate("mean", x) > 1000


def test_no_outliers_keep_everything_when_nothing_is_left():
    # 2 distinct samples both lie outside [quantile(0.01), quantile(0.99)]: POT would give NaN
    assert aggregate("mean_no_outliers", np.array([1.0, 3.0])) == 2.0
    assert aggregate("median_no_outliers", np.array([[1.0, 5.0], [3.0, 5.0]])).tolist() == [2.0, 5.0]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 33, 60])
@pytest.mark.parametrize("channels", [None, 6])
def test_hl_estimator_vs_brute_force(n, channels):
    shape = (n,) if channels is None else (n, channels)
    x = np.random.default_rng(n).normal(size=shape)
    x[: n // 3] = np.round(x[: n // 3])  # some ties
    np.testing.assert_allclose(aggregate("hl_estimator", x, chunks=min(n, 3)), reference("hl_estimator", x),
                               rtol=1e-6)


def test_hl_estimator_single_sample_and_no_self_pairs():
    assert aggregate("hl_estimator", np.array([[1.5, -2.0]])).tolist() == [1.5, -2.0]
    # pairs i > j of [0, 1, 10]: sums 1, 10, 11 -> median 10 -> 5 (with self pairs it would differ)
    assert aggregate("hl_estimator", np.array([0.0, 1.0, 10.0])) == 5.0


@pytest.mark.parametrize("budget", [1, 7, 100, 5000])
def test_hl_estimator_with_a_small_pair_budget(budget):
    rng = np.random.default_rng(budget)
    x = np.stack([rng.normal(size=400), np.maximum(rng.normal(size=400), 0),  # ReLU-like: many ties at 0
                  np.zeros(400), rng.standard_cauchy(400)], axis=1)
    agg = registry.make_aggregator("hl_estimator")
    agg.pair_budget = budget
    agg.update(x)
    np.testing.assert_allclose(agg.result(), reference("hl_estimator", x), rtol=1e-6)


def test_hl_estimator_memory_stays_bounded():
    x = np.random.default_rng(9).normal(size=(6000, 2))  # 18M pair sums per channel: 144 MB if materialised
    agg = registry.make_aggregator("hl_estimator")
    agg.update(x)
    tracemalloc.start()
    try:
        got = agg.result()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16e6
    np.testing.assert_allclose(got, x.mean(axis=0), atol=0.05)  # symmetric data: HL estimates the centre
