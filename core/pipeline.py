"""Pipelines: a sequence of registered algorithms run over one model with one engine.

For each algorithm the pipeline asks which statistics it needs on the model as the previous algorithms
left it, collects them in one pass over the calibration data, and lets the algorithm edit the model.
Composite algorithms (``steps``) expand to their registered parts, sharing their params.
"""
import json
import random
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import attrs
import numpy as np
import openvino as ov

from .config import parse_params
from .engine import Engine
from .errors import ConfigError
from .events import AlgorithmFinished, send
from .graph import Graph
from .registry import guarded, lookup
from .statistics import Statistic, TensorRef

if TYPE_CHECKING:
    from .hwtarget import HardwareTarget


@attrs.frozen(eq=False)
class ChannelTransform:
    """How an algorithm changed a tensor per channel: ``new = (old - shift) / scale`` along the tensor's
    channel axis ``axis`` (``shift`` and ``scale`` hold one value per channel; ``scale > 0``).

    The other algorithms of a stage measured the tensor as it was when the stage started; :meth:`apply`
    turns a per-channel statistic of the old tensor into the same statistic of the new one. That is
    exact for statistics that follow an increasing affine map: min, max, means (a window mean too).

    ``saturation_fix`` names the weighted ops whose weights absorbed ``scale`` and must therefore use the
    saturation-fix grid on a target that has one (POT's rule for channel-aligned consumers).
    """

    axis: int
    shift: np.ndarray
    scale: np.ndarray
    saturation_fix: tuple = ()

    def apply(self, value: np.ndarray, channel_axis: int = 0) -> np.ndarray:
        """``(value - shift) / scale`` with the channels of ``value`` on its axis ``channel_axis``."""
        value = np.asarray(value)
        shape = [1] * value.ndim or [1]
        shape[channel_axis] = -1
        return (value - self.shift.reshape(shape)) / self.scale.reshape(shape)


@attrs.define
class ChannelTransforms:
    """The channel transforms of a run, as the algorithms of a stage tell each other about them.

    * From :meth:`Algorithm.statistics <ovquant.algorithm.Algorithm.statistics>`, an algorithm that
      may change a tensor per channel :meth:`announce` s it (with its channel axis), so that the
      algorithms after it in the stage request statistics they can carry through the change;
    * from ``apply``, it :meth:`record` s what it did as a :class:`ChannelTransform`, which the
      algorithms after it read with :meth:`get`.

    Announcements and transforms hold for one stage (the next one measures the changed model);
    :meth:`saturation_fix_layers` covers the whole run.
    """

    announced: dict = attrs.Factory(dict)    #: TensorRef -> channel axis, this stage
    recorded: dict = attrs.Factory(dict)     #: TensorRef -> ChannelTransform, this stage
    earlier: list = attrs.Factory(list)      #: ChannelTransforms of the earlier stages

    def announce(self, tensor: TensorRef, axis: int) -> None:
        self.announced[tensor] = axis

    def axis(self, tensor: TensorRef) -> Optional[int]:
        """The channel axis ``tensor`` was announced with in this stage, or None."""
        return self.announced.get(tensor)

    def record(self, tensor: TensorRef, transform: ChannelTransform) -> None:
        self.recorded[tensor] = transform

    def get(self, tensor: TensorRef) -> Optional[ChannelTransform]:
        """How ``tensor`` was changed in this stage, or None."""
        return self.recorded.get(tensor)

    def saturation_fix_layers(self) -> set:
        """Ops whose weights must use the saturation-fix grid, from every transform of the run."""
        return {n for t in [*self.earlier, *self.recorded.values()] for n in t.saturation_fix}

    def next_stage(self) -> None:
        self.earlier.extend(self.recorded.values())
        self.announced.clear()
        self.recorded.clear()


@attrs.define
class Context:
    """What every algorithm of a run shares, and all of it (docs/plugins.md): the hardware target, the
    engine, ``strict`` (a placement rule that matches nothing is an error), the stage's channel
    transforms, and per-run state an algorithm keeps across stages (it gets a new instance per stage);
    ``calibration`` (the run's calibration subset, in the order the stages read it) and ``float_model``
    (the model as the run received it, kept only when a step declares ``needs_float_model``) for
    algorithms that judge the whole model's output error (:mod:`ovquant.output_probe`); ``body``: the model is
    the body of an If (:mod:`ovquant.bodies`), so its Parameters are inner tensors, not the network's inputs."""

    target: "HardwareTarget"
    engine: Engine
    strict: bool = False
    transforms: ChannelTransforms = attrs.Factory(ChannelTransforms)
    calibration: Any = None
    float_model: Optional[ov.Model] = None
    body: bool = False
    _state: dict = attrs.Factory(dict)

    def state(self, key: str, factory: Callable[[], Any]) -> Any:
        """The run's object for ``key`` (made by ``factory()`` the first time it is asked for); an
        algorithm names its keys after itself."""
        if key not in self._state:
            self._state[key] = factory()
        return self._state[key]


@attrs.define
class Step:
    name: str
    params: Any


def expand(name: str, params: Any, path: str = "algorithm") -> list:
    """The leaf steps of algorithm ``name`` (a composite expands to its registered ``steps``)."""
    try:
        cls = lookup("algorithms", name)
    except KeyError as exc:
        raise ConfigError(f"{path}.name: {exc.args[0]}") from None
    steps = _guard(name, "steps_for", cls.steps_for, params)
    if not steps:
        return [Step(name, params)]
    out = []
    for sub in steps:
        out.extend(expand(sub, params, path))
    return out


class Pipeline:
    """Runs ``steps`` (``[(name, params), ...]``; params may be a dict or a params object)."""

    def __init__(self, steps: Sequence, target_device: str = "ANY", engine: Optional[Engine] = None,
                 strict: bool = False, disabled: Sequence[str] = ()):
        self.steps: list[Step] = []
        for i, item in enumerate(steps):
            name, params = (item.name, item.params) if isinstance(item, Step) else item
            try:
                cls = lookup("algorithms", name)
            except KeyError as exc:
                raise ConfigError(f"pipeline[{i}].name: {exc.args[0]}") from None
            params = parse_params(cls, params if params is not None else {}, f"pipeline[{i}].params")
            self.steps.extend(expand(name, params, f"pipeline[{i}]"))
        # an algorithm may name an API switch (e.g. NNCF's ``fast_bias_correction=None``) that drops it
        self.steps = [s for s in self.steps if getattr(lookup("algorithms", s.name), "api_switch", None) not in disabled]
        self.target_device = target_device
        #: the calibration samples statistics were collected on: their indices (None: the first
        #: ``used_count``), set by :meth:`run`
        self.used_indices: Optional[set] = None
        self.used_count: Optional[int] = None
        self.engine = engine or Engine()
        self.strict = strict

    @property
    def names(self) -> list:
        return [s.name for s in self.steps]

    def _target(self):
        device = self.target_device
        for s in self.steps:
            device = getattr(s.params, "target_device", None) or device
        try:
            return lookup("hw_targets", device)
        except KeyError as exc:
            raise ConfigError(f"target_device: {exc.args[0]}") from None

    def _subset(self, data: Any, subset_size: Optional[int]) -> Any:
        """POT's sampler: the first ``stat_subset_size`` samples, or with ``shuffle_data`` a random
        subset drawn with ``seed`` (deterministic), kept in dataset order."""
        p = self.steps[0].params if self.steps else None
        self.used_count = subset_size if subset_size is not None else getattr(p, "stat_subset_size", None)
        if not getattr(p, "shuffle_data", False):
            return data
        from .dataset import open_source

        items = open_source(data, None)
        if not (hasattr(items, "__len__") and hasattr(items, "__getitem__")) or isinstance(items, dict):
            items = list(items)   # a stream: read once to draw from it
        n = self.used_count
        if n is None or n >= len(items):
            return items
        idx = sorted(random.Random(getattr(p, "seed", 0)).sample(range(len(items)), n))
        self.used_indices = set(idx)
        return [items[i] for i in idx]

    def settings(self) -> dict:
        """The effective settings of the run: target and each step's params, as plain JSON values."""
        from .config import unstructure

        def plain(params):
            try:
                v = unstructure(params) if not isinstance(params, dict) else dict(params)
            except Exception:
                v = repr(params)
            return v

        return {"target_device": self.target_device, "stat_subset_size": self.used_count,
                "steps": [{"name": s.name, "params": plain(s.params)} for s in self.steps]}

    def run(self, model: ov.Model, data: Any, subset_size: Optional[int] = None, body: bool = False) -> tuple:
        """Quantize ``model`` in place and return ``(model, report)`` (``body``: see :class:`Context`)."""
        target = self._target()
        ctx = Context(target=target, engine=self.engine, strict=self.strict, body=body)
        graph = Graph(model)
        report = {"algorithms": [], "stages": [], "target_device": target.name}
        t_run = time.perf_counter()
        stages: list = []
        for step in self.steps:
            cls = lookup("algorithms", step.name)
            if not stages or cls.new_stage:
                stages.append([])
            stages[-1].append((step, cls))
        data = self._subset(data, subset_size)
        ctx.calibration = data
        if any(getattr(cls, "needs_float_model", False) for stage in stages for _, cls in stage):
            ctx.float_model = model.clone()
        for i, stage in enumerate(stages, start=1):
            ctx.transforms.next_stage()
            algos = [(step, _guard(step.name, "__init__", cls, step.params, ctx)) for step, cls in stage]
            names = [step.name for step, _ in stage]
            first = stage[0][0].params
            n = subset_size if subset_size is not None else getattr(first, "stat_subset_size", None)
            for step, algo in algos:
                n = _guard(step.name, "stage_samples", algo.stage_samples, n)
            t0 = time.perf_counter()
            requested = [_guard(step.name, "statistics", lambda a=algo: _statistics(a.statistics(graph)))
                         for step, algo in algos]
            union = list(dict.fromkeys(st for req in requested for st in req))
            stats = self.engine.collect(graph.model, union, data, n, stage=i, algorithms=names)   # announced if empty
            if union:
                report["stages"].append({"stage": i, "algorithms": names, "seconds": round(time.perf_counter() - t0, 3),
                                         **{k: v for k, v in self.engine.last_run.items() if k != "stage"}})
            for step, algo in algos:
                t1 = time.perf_counter()
                entry = _guard(step.name, "apply", lambda a=algo: _entry(a.apply(graph, stats)))
                graph.invalidate()
                secs = time.perf_counter() - t1
                entry.setdefault("summary", _summary(entry))
                report["algorithms"].append({"name": step.name, "seconds": round(secs, 3), **entry})
                send(AlgorithmFinished(step.name, secs, entry))
        report["seconds"] = round(time.perf_counter() - t_run, 3)
        return graph.model, report


def _summary(entry: dict) -> str:
    """A sentence for an algorithm that gave none: its counts (``n_*`` keys)."""
    counts = [f"{k[2:].replace('_', ' ')}: {v}" for k, v in entry.items() if k.startswith("n_") and isinstance(v, int)]
    return "; ".join(counts) if counts else "ran"


def _statistics(requested) -> list:
    out = list(requested or ())
    bad = next((r for r in out if not isinstance(r, Statistic)), None)
    if bad is not None:
        raise TypeError(f"yielded {type(bad).__name__} {bad!r:.60}, expected ovquant.statistics.Statistic")
    return out


def _entry(entry) -> dict:
    """An algorithm's report entry: a dict (None for none) whose values the JSON report can hold."""
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise TypeError(f"returned {type(entry).__name__}, expected a dict (the report entry)")
    try:
        json.dumps(entry, default=lambda v: v.item() if hasattr(v, "item") else _no_json(v))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"returned a report entry that is not JSON: {exc}") from None
    return entry


def _no_json(v):
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def _guard(name: str, where: str, fn, *args):
    """Run an algorithm's method; an unexpected exception becomes one line naming it and its plugin."""
    return guarded("algorithms", name, where, fn, *args)
