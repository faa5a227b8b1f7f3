"""The algorithm interface. Concrete algorithms are plugins (``ovquant.plugins.algorithms``)."""
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np

from .config import QuantizationParams
from .statistics import Statistic


class Algorithm:
    """One step of a pipeline.

    A pipeline calls, for each algorithm in order, :meth:`statistics` on the model as the previous
    algorithms left it, collects every requested :class:`~ovquant.statistics.Statistic` (one pass over
    the calibration data for the stage, shared with the algorithms of the same stage), then calls
    :meth:`apply`, which edits the model and returns a dict for the run report.

    Composite algorithms (like POT's DefaultQuantization) set ``steps`` to the names of registered
    algorithms they expand to; they implement nothing else.
    """

    name: ClassVar[str] = ""
    #: attrs class the ``params`` of this algorithm are structured into (key paths in errors come from it)
    params_class: ClassVar[type] = QuantizationParams
    #: a composite algorithm: the registered algorithms it runs, in order
    steps: ClassVar[tuple] = ()
    #: the algorithm ``ovquant.quantize`` runs when no config names one (POT: DefaultQuantization)
    is_default: ClassVar[bool] = False

    def __init__(self, params: Any, context: "Any"):
        self.params = params
        self.context = context

    def statistics(self, graph) -> Iterable[Statistic]:
        """What this algorithm needs from the calibration data, given the model as it is now."""
        return ()

    def apply(self, graph, stats: Mapping[Statistic, np.ndarray]) -> dict:
        """Edit ``graph`` in place using the collected ``stats``; return the report entry."""
        raise NotImplementedError
