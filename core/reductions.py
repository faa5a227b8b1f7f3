"""What the engine plans per distinct per-sample reduction: where its value is read in a statistics model's
outputs, and how a block of samples' values is turned into the rows its aggregators are fed."""
from typing import Optional

import numpy as np

from .statistics import Estimator


def as_rows(v) -> np.ndarray:
    """One sample's value as rows: itself when it has axes, else one row."""
    return np.atleast_1d(v) if np.ndim(v) else np.asarray(v).reshape(1)


def _stacked(block: np.ndarray, shape: tuple) -> np.ndarray:
    """``[B, ...]`` values of ``shape`` each, as rows: the first axis of a value is its batch axis."""
    b = block.shape[0]
    return np.array(block.reshape((b * shape[0],) + tuple(shape[1:]) if shape else (b,)))


class PlannedReduction:
    """One per-sample reduction and the aggregators fed by it."""

    def __init__(self, estimator, axes, statistics: list):
        self.estimator = estimator
        self.axes = axes
        self.statistics = statistics
        self.output_index: Optional[int] = None   # raw tensor output (numpy form)
        #: in graph: ``[(offset, shape), ...]`` in the packed output, one per output graph_reduce returned
        self.packed: Optional[list] = None
        #: graph_reduce returned a tuple: its values go through Estimator.from_graph_parts (even one part)
        self.in_parts = False

    @property
    def in_graph(self) -> bool:
        return self.packed is not None

    def spans(self) -> list:
        """``[(start, stop), ...]`` of this reduction's parts in a packed row."""
        return [(off, off + int(np.prod(shape, dtype=np.int64))) for off, shape in self.packed]

    def value(self, request) -> np.ndarray:
        """This numpy-form reduction's value for the sample ``request`` ran (a copy: the request reuses
        its output memory)."""
        return np.array(self.estimator.reduce(request.get_output_tensor(self.output_index).data, self.axes))

    def rows(self, packed_rows: np.ndarray) -> np.ndarray:
        """The values of a block of samples from their packed outputs ``[B, total]``, stacked on the first
        axis (a sample's value keeps its batch axis, or becomes one row when it is a scalar). Estimators
        that keep Estimator.from_graph are sliced for the whole block at once: no Python per sample; so are
        those whose graph_reduce returned a tuple of outputs (Estimator.from_graph_parts takes the block)."""
        b = packed_rows.shape[0]
        blocks = [packed_rows[:, start:stop] for start, stop in self.spans()]
        if self.in_parts:
            parts = [blk.reshape((b,) + tuple(shape)) for blk, (_, shape) in zip(blocks, self.packed)]
            v = np.asarray(self.estimator.from_graph_parts(*parts), np.float32)
            return _stacked(v, v.shape[1:])
        shape = self.packed[0][1]
        if type(self.estimator).from_graph is Estimator.from_graph:
            return _stacked(blocks[0], shape)
        return np.concatenate([as_rows(self.estimator.from_graph(v.reshape(shape))) for v in blocks[0]])
