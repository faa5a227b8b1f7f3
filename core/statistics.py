"""Base classes of range estimators and aggregators, and the statistic request the engine collects.

Statistics follow POT's two-step semantics:

1. an **estimator** reduces each calibration sample's tensor ``x`` (batch axis first) to one value per
   sample, per tensor (all axes but the batch axis are reduced) or per channel (all axes but the batch
   and the channel axis);
2. an **aggregator** folds those per-sample values over the calibration samples into the final value.

Concrete estimators and aggregators are plugins (``ovquant.plugins.estimators``, ``...aggregators``);
this module holds no concrete one.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import ClassVar, Optional

import attrs
import numpy as np

SIDES = ("min", "max")


class Estimator:
    """A per-sample reduction of a tensor.

    Subclasses set ``name`` and implement :meth:`reduce` (numpy). Those that can be expressed with
    OpenVINO ops also implement :meth:`graph_reduce`: the engine then appends those ops to the statistics
    model so that only the small reduced tensor leaves OpenVINO. The two forms must agree.

    ``side`` is the range border the estimator serves (``min`` or ``max``); quantile estimators use
    ``q = outlier_prob`` on the min side and ``q = 1 - outlier_prob`` on the max side.
    """

    name: ClassVar[str] = ""
    #: False for a statistic that algorithms request for themselves (a mean, a Gram matrix): a config's
    #: ``range_estimator.min/max.type`` may name only range estimators
    range_estimator: ClassVar[bool] = True
    #: the params a config may give it (``range_estimator.min/max.params``): an attrs class whose fields,
    #: with their defaults, are keyword arguments of the constructor, kept as attributes of the same
    #: names (they are part of :meth:`key`); None: it takes none. An optional
    #: ``validate_params(params, path)`` static method checks their values (see docs/plugins.md)
    params_class: ClassVar[Optional[type]] = None
    #: :meth:`graph_reduce` also takes tensors whose shape is not static (its output's shape is)
    graph_dynamic: ClassVar[bool] = False

    def __init__(self, side: str = "max", outlier_prob: float = 1e-4):
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {side!r}")
        self.side = side
        self.outlier_prob = float(outlier_prob)

    # numpy form ----------------------------------------------------------------------------------
    def reduce(self, x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        """Reduce ``x`` over ``axes`` (the other axes are kept, in order). Must be implemented."""
        raise NotImplementedError

    # in-graph form -------------------------------------------------------------------------------
    def graph_reduce(self, output, axes: tuple[int, ...]):
        """Append OpenVINO ops computing :meth:`reduce` on ``output`` (an ``openvino.Output`` with a
        static shape, or any shape where the class sets ``graph_dynamic``) and return the output to expose
        (its shape static), or a tuple of such outputs that :meth:`from_graph_parts` combines, or ``None``
        to use the numpy form."""
        return None

    def from_graph(self, value: np.ndarray) -> np.ndarray:
        """Turn the value computed by the :meth:`graph_reduce` ops into what :meth:`reduce` returns."""
        return value

    def from_graph_parts(self, *parts: np.ndarray) -> np.ndarray:
        """Where :meth:`graph_reduce` returned a tuple of outputs: combine their values into what
        :meth:`reduce` returns, for a block of samples at once (each part and the result have the samples
        on a new first axis). An output another estimator exposes too (a shared :func:`reduce_op`) is
        computed and read once."""
        raise NotImplementedError(f"{type(self).__name__}.graph_reduce returned several outputs")

    def key(self) -> tuple:
        """What makes two estimators compute the same thing (used to collect it once, and to cache it):
        the name, the side and outlier_prob where they matter (:attr:`uses_outlier_prob`, :attr:`uses_side`),
        and the declared params."""
        side = self.uses_outlier_prob or self.uses_side or (
            self.uses_side is None and not type(self).__module__.startswith("ovquant."))
        base = (self.name, self.side, self.outlier_prob) if side else (self.name,)
        return base + self.params_key()

    def params_key(self) -> tuple:
        """``(name, value)`` of each declared param (:attr:`params_class`), as this estimator holds it."""
        cls = type(self).params_class
        return tuple((f.name, getattr(self, f.name)) for f in attrs.fields(cls)) if cls is not None else ()

    #: whether ``outlier_prob`` and ``side`` change the result (quantile estimators)
    uses_outlier_prob: ClassVar[bool] = False
    #: whether ``side`` changes the result; None (unsaid): yes for a third-party estimator (a min and a max
    #: request are then collected apart: safe, if not the cheapest), no for the built-ins, which say so in
    #: their math; False: the value is the same for both sides
    uses_side: ClassVar[Optional[bool]] = None

    def __repr__(self):
        return f"{type(self).__name__}(side={self.side!r}, outlier_prob={self.outlier_prob})"


class Aggregator:
    """Folds per-sample estimator values over the calibration samples.

    :meth:`update` receives an array whose first axis indexes samples (one row per batch item); the
    engine calls it in sample order. :meth:`result` returns the aggregated value with the sample axis
    removed. Streaming aggregators keep O(1) memory; those that need every sample set
    ``needs_all_samples = True`` and implement :meth:`aggregate` on the stacked values.
    """

    name: ClassVar[str] = ""
    needs_all_samples: ClassVar[bool] = True
    #: the params a config may give it (``range_estimator.min/max.aggregator_params``), declared as an
    #: estimator's :attr:`Estimator.params_class` is; None: it takes none
    params_class: ClassVar[Optional[type]] = None

    def __init__(self):
        self._rows: list[np.ndarray] = []

    def update(self, values: np.ndarray) -> None:
        self._rows.append(np.atleast_1d(np.asarray(values)))

    def result(self) -> np.ndarray:
        if not self._rows:
            raise ValueError(f"aggregator {self.name!r} received no samples")
        return self.aggregate(np.concatenate(self._rows, axis=0))

    def aggregate(self, x: np.ndarray) -> np.ndarray:
        """Aggregate ``x`` of shape ``[n_samples, ...]`` over axis 0."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


def reduction_axes(rank: int, channel_axis: Optional[int]) -> tuple[int, ...]:
    """Axes an estimator reduces for a tensor of ``rank``: all but the batch axis 0 and, per channel,
    the channel axis. A rank-0 or rank-1 tensor is one sample, reduced whole (or kept per channel)."""
    if rank <= 1:
        if channel_axis is not None:
            return ()
        return tuple(range(rank))
    keep = {0}
    if channel_axis is not None:
        keep.add(channel_axis % rank)
    return tuple(a for a in range(rank) if a not in keep)


@attrs.frozen
class TensorRef:
    """An output port of a node of the model, by the node's friendly name."""

    node: str
    port: int = 0

    def __str__(self):
        return self.node if self.port == 0 else f"{self.node}:{self.port}"


@attrs.frozen
class Statistic:
    """One value an algorithm asks the engine for: ``aggregator(estimator(tensor) per sample)``.

    ``aggregator=None`` asks for every per-sample value, stacked along axis 0 (for algorithms that
    derive their own statistic from per-sample values). ``channel_axis`` is ``None`` for a per-tensor
    value. ``estimator_params`` and ``aggregator_params``
    are tuples of ``(name, value)`` pairs (hashable), passed to the plugin classes as keyword arguments.
    """

    tensor: TensorRef
    estimator: str
    aggregator: Optional[str]
    channel_axis: Optional[int] = None
    estimator_params: tuple = ()
    aggregator_params: tuple = ()

    @classmethod
    def make(cls, tensor: TensorRef, estimator: str, aggregator: Optional[str], channel_axis=None,
             estimator_params: Optional[dict] = None, aggregator_params: Optional[dict] = None) -> "Statistic":
        return cls(tensor, estimator, aggregator, channel_axis,
                   tuple(sorted((estimator_params or {}).items())),
                   tuple(sorted((aggregator_params or {}).items())))


# ---- shared in-graph reductions ------------------------------------------------------------------
_shared: contextvars.ContextVar = contextvars.ContextVar("ovquant_shared_reductions", default=None)
_REDUCE_OPS = ("min", "max", "mean")


@contextlib.contextmanager
def shared_reductions():
    """Within this context, :func:`reduce_op` returns one node per (op, tensor, axes): estimators that
    need the same reduction (``min`` and ``abs_max``, say) share it. The engine plans in this context."""
    token = _shared.set({})
    try:
        yield
    finally:
        _shared.reset(token)


def reduce_op(kind: str, output, axes: tuple):
    """An OpenVINO ``Reduce{Min,Max,Mean}`` of ``output`` over ``axes`` (no kept dims), shared with
    every other estimator asking for the same one while the engine plans a statistics model."""
    import openvino.opset13 as ops

    if kind not in _REDUCE_OPS:
        raise ValueError(f"reduce_op: kind must be one of {_REDUCE_OPS}")
    if not len(axes):
        return output   # nothing to reduce (the CPU plugin rejects a Reduce without axes)
    cache = _shared.get()
    key = (kind, output.get_node().get_friendly_name(), output.get_index(), tuple(axes))
    if cache is not None and key in cache:
        return cache[key]
    fn = {"min": ops.reduce_min, "max": ops.reduce_max, "mean": ops.reduce_mean}[kind]
    out = fn(output, np.array(axes, np.int64), keep_dims=False).output(0)
    if cache is not None:
        cache[key] = out
    return out


#: constants the planner adds with at most this many elements are merged when equal
SHARED_CONSTANT_SIZE = 4096


def share_constants(model, original: set) -> None:
    """Make the small Constants the planner added (axes, shapes, borders: friendly names not in
    ``original``) one node per (type, shape, value). The values are
    unchanged; the plugin's compile time grows with the number of nodes (docs/algorithms.md)."""
    seen = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_friendly_name() in original:
            continue
        out = op.output(0)
        if not out.get_partial_shape().is_static or int(np.prod(list(out.get_shape()), dtype=np.int64)) > SHARED_CONSTANT_SIZE:
            continue
        v = op.get_data()
        key = (str(out.get_element_type()), tuple(v.shape), v.tobytes())
        first = seen.setdefault(key, op)
        if first is not op:
            for target in list(out.get_target_inputs()):
                target.replace_source_output(first.output(0))
