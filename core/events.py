"""The typed payloads of the pipeline event hooks (see :mod:`ovquant.hookspecs`).

Each event hook receives its payload's fields as keyword arguments (as in hook API 1) and the payload
itself as ``event``; an implementation names only the arguments it wants::

    @hookimpl
    def stage_started(event):            # or: def stage_started(stage, algorithms, n_samples)
        print(event.stage, event.algorithms, event.n_samples)

Events of one run come in this order: for each stage, ``stage_started``, ``sample_processed`` once per
calibration sample inferred, ``statistics_collected``, then ``algorithm_finished`` once per algorithm of
the stage; ``run_finished`` last, when the run's outputs exist. The payloads are frozen; the dicts they
hold are the run's own (read them, do not change them).
"""
import contextlib
import contextvars
from typing import Optional

import attrs

from .registry import call_each


@attrs.frozen
class StageStarted:
    """A statistics stage starts."""

    stage: int                 #: the stage's index, 1-based
    algorithms: tuple          #: the names of the algorithms it serves, in order
    n_samples: int             #: calibration samples it will infer (0: nothing to collect, or not known)


@attrs.frozen
class SampleProcessed:
    """One calibration sample was inferred and its statistics folded in (samples come in order)."""

    stage: int
    index: int                 #: 0-based sample index within the stage's subset
    n_samples: int             #: as in the stage's StageStarted


@attrs.frozen
class StatisticsCollected:
    """A statistics stage finished collecting."""

    stage: int
    n_samples: int             #: samples the statistics are over (0: nothing was collected)
    n_statistics: int          #: statistics collected
    seconds: float


@attrs.frozen
class AlgorithmFinished:
    """An algorithm finished editing the model."""

    name: str
    seconds: float
    report: dict               #: the entry it adds to the run report's ``algorithms`` list


@attrs.frozen
class RunFinished:
    """A quantization run finished: ``ovquant quantize`` (and ``quantize_from_config`` /
    ``quantize_from_args``) after its files are committed, ``quantize`` / ``quantize_with_report`` before
    they return. ``report`` is the run report: for a run that writes files, the dict written as
    ``<name>.report.json`` (whose ``output_files`` record the file sizes and checksums); ``outputs`` the
    absolute paths written, by kind (``xml``, ``bin``, ``report``, and ``html`` with ``--report-html``),
    empty when the run writes nothing."""

    report: dict
    outputs: dict = attrs.Factory(dict)


#: the hook each payload type is sent to
HOOKS = {StageStarted: "stage_started", SampleProcessed: "sample_processed",
         StatisticsCollected: "statistics_collected", AlgorithmFinished: "algorithm_finished",
         RunFinished: "run_finished"}


def send(event) -> None:
    """Call the event's hook on every plugin: its fields as keyword arguments, and ``event=event``."""
    fields = {f.name: getattr(event, f.name) for f in attrs.fields(type(event))}
    call_each(HOOKS[type(event)], **fields, event=event)


#: set while a run that writes files calls ``quantize_with_report``: run_finished then waits for the files
_WRITING = contextvars.ContextVar("ovquant_writing_files", default=False)


@contextlib.contextmanager
def writing_files():
    """Within: the run writes files, so :func:`finish_run` without outputs sends nothing (the caller sends
    it once the files are committed)."""
    token = _WRITING.set(True)
    try:
        yield
    finally:
        _WRITING.reset(token)


def finish_run(report: dict, outputs: Optional[dict] = None) -> None:
    """Send run_finished for ``report`` and the written ``outputs`` (see :class:`RunFinished`)."""
    if outputs is None and _WRITING.get():
        return
    send(RunFinished(report, dict(outputs or {})))
