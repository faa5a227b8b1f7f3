"""The algorithm interface. Concrete algorithms are plugins (``ovquant.plugins.algorithms``)."""
from typing import Optional, Any, ClassVar, Iterable, Mapping

import numpy as np

from .config import AlgorithmParams
from .statistics import Statistic


class Algorithm:
    """One step of a pipeline.

    A pipeline runs in **stages**: a stage is one pass over the calibration data. The first algorithm
    starts a stage, and so does every algorithm with ``new_stage = True``. At the start of a stage the
    pipeline asks each of its algorithms, in order, for :meth:`statistics` on the model as it is then,
    collects all of them in one pass, and then calls :meth:`apply` on each in order; ``apply`` edits the
    model and returns a dict for the run report.

    An algorithm that changes a tensor later algorithms of its stage measured (as channel alignment
    does) records how in ``context.transforms`` (a :class:`~ovquant.pipeline.ChannelTransform` per
    tensor) so that they can correct their statistics; one that might do so announces the tensors
    there from :meth:`statistics` (see docs/plugins.md, "What an algorithm may rely on").

    Composite algorithms (like POT's DefaultQuantization) set ``steps`` to the names of registered
    algorithms they expand to; they implement nothing else.
    """

    name: ClassVar[str] = ""
    #: attrs class the ``params`` of this algorithm are structured into (key paths in errors come from it);
    #: algorithms declare their own (the default holds only the keys every algorithm shares)
    params_class: ClassVar[type] = AlgorithmParams
    #: a composite algorithm: the registered algorithms it runs, in order
    steps: ClassVar[tuple] = ()
    #: start a new statistics pass on the model as the previous algorithms left it
    new_stage: ClassVar[bool] = False
    #: keep the model as the run received it in ``context.float_model`` (for whole-model output errors)
    needs_float_model: ClassVar[bool] = False
    #: the algorithm ``ovquant.quantize`` runs when no config names one (POT: DefaultQuantization)
    is_default: ClassVar[bool] = False
    #: a keyword of ``ovquant.quantize`` that, set to None, leaves this algorithm out of the pipeline
    #: (as NNCF's ``fast_bias_correction=None`` leaves out bias correction)
    api_switch: ClassVar[Optional[str]] = None
    #: why ``api_switch=False`` is refused (the rest of the error line), as NNCF's False asks for something
    #: this algorithm does not do; True keeps the algorithm in
    api_switch_false: ClassVar[str] = "has no ovquant equivalent"

    @classmethod
    def steps_for(cls, params: Any) -> tuple:
        """The registered algorithms a composite runs for these params (default: ``steps``)."""
        return tuple(cls.steps)

    def __init__(self, params: Any, context: "Any"):
        self.params = params
        self.context = context

    def statistics(self, graph) -> Iterable[Statistic]:
        """What this algorithm needs from the calibration data, given the model as it is now."""
        return ()

    def stage_samples(self, n: Optional[int]) -> Optional[int]:
        """The number of samples the stage this algorithm is part of runs over, given the configured ``n``
        (None: all); the stage uses the smallest any of its algorithms returns. Default: ``n``."""
        return n

    def apply(self, graph, stats: Mapping[Statistic, np.ndarray]) -> dict:
        """Edit ``graph`` in place using the collected ``stats``; return the report entry."""
        raise NotImplementedError
