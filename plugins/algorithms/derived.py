"""Range statistics of a tensor that an earlier algorithm of the same stage changes per channel (not a
plugin). Statistics come from the model as the stage started, so for such a tensor MinMax asks for the
per-sample, per-channel min and max (:func:`requests`) and derives what its range estimators would have
measured on the changed tensor (:func:`per_sample`) after the
:class:`~ovquant.pipeline.ChannelTransform` (an increasing affine map per channel, so a channel's min
stays its min). ActivationChannelAlignment checks the same list before it aligns anything.
"""
import numpy as np

from ovquant.statistics import Statistic, TensorRef

#: range estimators whose per-sample value follows from the per-channel, per-sample min and max
DERIVABLE = frozenset({"min", "max", "abs_max"})


def requests(tensor: TensorRef, axis: int) -> dict:
    """``{"min": ..., "max": ...}``: every sample's per-channel min and max of ``tensor`` (channel axis
    ``axis``), stacked (no aggregator)."""
    return {side: Statistic.make(tensor, side, None, axis, {"side": side}) for side in ("min", "max")}


def per_sample(estimator: str, lo: np.ndarray, hi: np.ndarray, per_channel: bool) -> np.ndarray:
    """The per-sample value of ``estimator`` (one of :data:`DERIVABLE`) from per-sample, per-channel min
    ``lo`` and max ``hi`` (``[samples, C]``): per channel, or reduced over the channels (min of the mins,
    max of the maxes or abs maxes)."""
    v = {"min": lo, "max": hi, "abs_max": np.maximum(np.abs(lo), np.abs(hi))}[estimator]
    if per_channel:
        return v
    return v.min(axis=1) if estimator == "min" else v.max(axis=1)
