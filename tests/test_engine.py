"""The calibration engine against numpy, on small real OpenVINO models."""
import warnings

import numpy as np
import pytest

import models
from ovquant import hookimpl
from ovquant.dataset import Dataset
from ovquant.engine import Engine
from ovquant.errors import DataError, ModelError
from ovquant.registry import register_plugin, unregister_plugin
from ovquant.statistics import Statistic, TensorRef

NAMES = ["relu1", "pool1", "conv2/add", "relu3", "gap"]


@pytest.fixture(scope="module")
def net():
    m = models.conv_net()
    samples = models.random_samples(m, 12, seed=3)
    acts = models.activations(m, NAMES, samples)   # [n, 1, ...] per node
    return m, samples, acts


def _st(name, est, agg, axis=None, **p):
    return Statistic.make(TensorRef(name), est, agg, axis, p)


def _per_sample(a, fn, axis=None):
    """numpy reference: per sample (row) reduce all axes but the batch (and channel) axis."""
    a = a.reshape(a.shape[0], *a.shape[2:]) if a.shape[1] == 1 else a   # drop batch 1
    if axis is None:
        return np.array([fn(x.ravel()) for x in a])
    return np.array([[fn(x.take(c, axis=axis - 1).ravel()) for c in range(x.shape[axis - 1])] for x in a])


@pytest.mark.parametrize("inplace", [True, False])
def test_per_tensor_statistics_match_numpy(net, inplace):
    m, samples, acts = net
    stats = {}
    for n in NAMES:
        stats[(n, "min")] = _st(n, "min", "min", side="min")
        stats[(n, "max")] = _st(n, "max", "max", side="max")
        stats[(n, "abs_max_mean")] = _st(n, "abs_max", "mean", side="max")
        stats[(n, "mean")] = _st(n, "mean", "mean")
        stats[(n, "q")] = _st(n, "quantile", "median", side="max", outlier_prob=0.01)
    eng = Engine(inplace_statistics=inplace)
    out = eng.collect(m, list(stats.values()), samples)
    assert eng.last_run["n_samples"] == len(samples)
    assert eng.last_run["n_in_graph"] == (eng.last_run["n_reductions"] if inplace else 0)
    for n in NAMES:
        a = acts[n]
        np.testing.assert_allclose(out[stats[(n, "min")]], a.min(), rtol=1e-6)
        np.testing.assert_allclose(out[stats[(n, "max")]], a.max(), rtol=1e-6)
        np.testing.assert_allclose(out[stats[(n, "abs_max_mean")]], _per_sample(a, lambda x: np.abs(x).max()).mean(), rtol=1e-5)
        np.testing.assert_allclose(out[stats[(n, "mean")]], _per_sample(a, np.mean).mean(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out[stats[(n, "q")]], np.median(_per_sample(a, lambda x: np.quantile(x, 0.99))), rtol=1e-5)


def test_the_statistics_model_holds_each_small_constant_it_adds_once(net):
    """Every reduction needs its axes and the packing needs a shape: equal ones are one Constant node (the
    plugin's compile time grows with the node count), and the model's own constants are left alone."""
    m, _, _ = net
    stats = [_st(n, est, "mean", axis, side=side) for n in NAMES for axis in (None, 1)
             for est, side in (("min", "min"), ("max", "max"), ("abs_max", "max"), ("mean", "max"))]
    model = m.clone()
    eng = Engine()
    groups, estimators = eng._group(stats)
    original = {op.get_friendly_name() for op in model.get_ordered_ops()}
    stats_model, _ = eng._plan(model, groups, estimators)
    added = [op for op in stats_model.get_ordered_ops()
             if op.get_type_name() == "Constant" and op.get_friendly_name() not in original]
    values = [(str(op.get_element_type()), op.get_data().shape, op.get_data().tobytes()) for op in added]
    assert len(values) == len(set(values)) > 3
    assert len(added) < len(groups)   # without sharing: one per reduction at least


def test_per_channel_statistics_match_numpy(net):
    m, samples, acts = net
    st_max = _st("relu1", "max", "max", axis=1, side="max")
    st_min = _st("conv2/add", "min", "mean", axis=1, side="min")
    st_q = _st("conv2/add", "quantile", "median", axis=1, side="min", outlier_prob=1e-4)
    out = Engine().collect(m, [st_max, st_min, st_q], samples)
    a1, a2 = acts["relu1"], acts["conv2/add"]
    np.testing.assert_allclose(out[st_max], a1.max(axis=(0, 1, 3, 4)), rtol=1e-6)
    np.testing.assert_allclose(out[st_min], _per_sample(a2, np.min, axis=1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(out[st_q], np.median(_per_sample(a2, lambda x: np.quantile(x, 1e-4), axis=1), 0), rtol=1e-5)
    assert out[st_max].shape == (a1.shape[2],)


def test_stacked_values_keep_sample_order_whatever_the_number_of_requests(net):
    m, samples, acts = net
    st = _st("gap", "max", None, side="max")
    mean = _st("conv2/add", "mean", "mean", axis=1)
    a = Engine(n_requests=1).collect(m, [st, mean], samples)
    b = Engine(n_requests=4).collect(m, [st, mean], samples)
    np.testing.assert_allclose(a[st], _per_sample(acts["gap"], np.max), rtol=1e-6)
    assert a[st].shape == (len(samples),)
    assert a[mean].tobytes() == b[mean].tobytes()   # same order of folding: bit-identical


def test_one_pass_events_and_subset(net):
    m, samples, _ = net
    seen = {"samples": 0, "stages": 0}

    class Counter:
        @hookimpl
        def sample_processed(self, stage, index, n_samples):
            seen["samples"] += 1

        @hookimpl
        def stage_started(self, stage, algorithms, n_samples):
            seen["stages"] += 1

    name = register_plugin(Counter(), name="test-counter")
    try:
        Engine().collect(m, [_st(n, "max", "max", side="max") for n in NAMES], samples, subset_size=5)
    finally:
        unregister_plugin(name)
    assert seen == {"samples": 5, "stages": 1}


def test_data_sources(tmp_path, net):
    m, samples, acts = net
    st = _st("relu1", "max", "max", side="max")
    arr = np.concatenate(samples)                     # [n, 3, 16, 16]: one sample per row, batch dim dropped
    expected = acts["relu1"].max()
    np.save(tmp_path / "x.npy", arr)
    np.savez(tmp_path / "x.npz", **{"input:image": arr[:, None]})
    for src in (arr, str(tmp_path / "x.npy"), str(tmp_path / "x.npz"), [{"image": s} for s in samples],
                Dataset(samples, transform_fn=lambda s: {"input:image": s})):
        np.testing.assert_allclose(Engine().collect(m, [st], src)[st], expected, rtol=1e-6)


def test_image_folder(tmp_path):
    from PIL import Image

    m = models.conv_net()
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (20, 24, 3), dtype=np.uint8) for _ in range(3)]
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    st = _st("image", "max", None, side="max")
    out = Engine().collect(m, [st], str(tmp_path))
    ref = [np.asarray(Image.fromarray(im).resize((16, 16), Image.BILINEAR), np.float32).max() for im in imgs]
    np.testing.assert_allclose(out[st], ref)


def test_bad_data_is_reported(net):
    m, samples, _ = net
    st = _st("relu1", "max", "max", side="max")
    with pytest.raises(DataError, match="shape"):
        Engine().collect(m, [st], [np.zeros((1, 3, 8, 8), np.float32)])
    with pytest.raises(DataError, match="empty"):
        Engine().collect(m, [st], [])
    with pytest.raises(DataError, match="names no model input"):
        Engine().collect(m, [st], [{"nope": samples[0]}])
    with pytest.raises(ModelError, match="missing_node"):
        Engine().collect(m, [_st("missing_node", "max", "max")], samples)
    with pytest.warns(UserWarning, match="only 12 samples"):
        Engine().collect(m, [st], samples, subset_size=50)


def test_integer_input_model_runs():
    m = models.int_input_net()
    samples = models.random_samples(m, 4)
    st = _st("embedding", "abs_max", "max", side="max")
    out = Engine().collect(m, [st], samples)
    ref = models.activations(m, ["embedding"], samples)["embedding"]
    np.testing.assert_allclose(out[st], np.abs(ref).max(), rtol=1e-6)


def test_statistics_of_one_branch_of_a_two_input_two_output_model():
    """The statistics model outputs only the statistics: a tensor of one input's branch, early in the
    model, is measured right (the other input and both model outputs are not needed) and in numpy form
    and in graph form alike, mixed in one pass, with a statistic on the other input's branch."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(5)
    a = ops.parameter([1, 4, 6], np.float32, name="a")
    b = ops.parameter([1, 4, 6], np.float32, name="b")
    ra = ops.relu(ops.matmul(a, ops.constant(rng.standard_normal((6, 6)).astype(np.float32)), False, False), name="ra")
    rb = ops.sigmoid(ops.add(b, ops.constant(np.float32(0.5))), name="rb")
    tail = ops.matmul(ops.multiply(ra, rb), ops.constant(rng.standard_normal((6, 3)).astype(np.float32)), False, False)
    m = ov.Model([ops.result(tail, name="out1"), ops.result(ops.exp(ra), name="out2")], [a, b], "two_in_two_out")
    samples = [{"a": rng.standard_normal((1, 4, 6)).astype(np.float32),
                "b": rng.standard_normal((1, 4, 6)).astype(np.float32)} for _ in range(70)]
    sts = [_st("ra", "max", "mean", side="max"), _st("ra", "quantile", "max", side="max", outlier_prob=0.25),
           _st("rb", "min", "min", side="min"), _st("ra", "mean", "mean", axis=2)]
    for inplace in (True, False):
        out = Engine(inplace_statistics=inplace).collect(m, sts, samples)
        acts = models.activations(m, ["ra", "rb"], samples)
        ra_, rb_ = acts["ra"], acts["rb"]
        np.testing.assert_allclose(out[sts[0]], ra_.reshape(70, -1).max(axis=1).mean(), rtol=1e-5)
        np.testing.assert_allclose(out[sts[1]], np.quantile(ra_.reshape(70, -1), 0.75, axis=1).max(), rtol=1e-5)
        np.testing.assert_allclose(out[sts[2]], rb_.min(), rtol=1e-6)
        np.testing.assert_allclose(out[sts[3]], ra_.reshape(70, -1, 6).mean(axis=1).mean(axis=0), rtol=1e-5)


def test_abs_max_next_to_min_adds_no_elementwise_op(net):
    """abs_max of a signed tensor reduces in graph to the ReduceMax and the ReduceMin that ``min`` shares,
    combined in numpy: the statistics model has one ReduceMin and one ReduceMax per (tensor, axes) and no
    Negative or Maximum beyond the model's own; the values equal numpy's, per tensor and per channel."""
    import collections

    import openvino as ov

    m, samples, acts = net
    planned = []

    class Recording(ov.Core):
        def compile_model(self, model, *a, **k):
            planned.append(model)
            return super().compile_model(model, *a, **k)

    sts = [_st("conv2/add", est, None, axis) for axis in (None, 1) for est in ("min", "abs_max")]
    out = Engine(core=Recording()).collect(m, sts, samples)
    a = acts["conv2/add"]
    assert a.min() < 0 < a.max()                            # signed: the two-part form is used
    for axis in (None, 1):
        lo, mag = out[sts[0 if axis is None else 2]], out[sts[1 if axis is None else 3]]
        np.testing.assert_allclose(lo, _per_sample(a, np.min, axis), rtol=1e-6)
        np.testing.assert_allclose(mag, _per_sample(a, lambda v: np.abs(v).max(), axis), rtol=1e-6)
    (stats_model,) = planned
    added = collections.Counter(n.get_type_name() for n in stats_model.get_ops())
    added.subtract(collections.Counter(n.get_type_name() for n in m.get_ops()))
    assert (added["ReduceMin"], added["ReduceMax"]) == (2, 2)
    assert added["Negative"] <= 0 and added["Maximum"] <= 0


def test_one_output_tuple_goes_through_from_graph_parts(net):
    """An estimator whose graph_reduce returns a tuple of one output has that value combined by its
    from_graph_parts (for the whole block), as with several outputs; it fails if the single part is
    taken raw, as from_graph's default does."""
    from ovquant.statistics import Estimator, reduce_op

    class HalfRange(Estimator):
        """``y = max(x) / 2``, in graph as the one-part tuple ``(ReduceMax(x),)``."""

        name = "test_half_max"

        def reduce(self, x, axes):
            return np.max(x, axis=axes) / 2

        def graph_reduce(self, output, axes):
            return (reduce_op("max", output, axes),)

        def from_graph_parts(self, hi):
            assert hi.ndim >= 1          # the block: samples on the first axis
            return hi / 2

    class Plugin:
        @hookimpl
        def register_estimators(self, register):
            register(HalfRange)

    m, samples, acts = net
    name = register_plugin(Plugin(), name="test-half-max")
    try:
        st = _st("conv2/add", "test_half_max", "mean")
        eng = Engine()
        out = eng.collect(m, [st], samples)
    finally:
        unregister_plugin(name)
    assert eng.last_run["n_in_graph"] == 1
    np.testing.assert_allclose(out[st], _per_sample(acts["conv2/add"], np.max).mean() / 2, rtol=1e-6)
