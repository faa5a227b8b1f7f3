"""The hooks of ovquant, as pluggy hook specifications.

Every built-in estimator, aggregator, algorithm and hardware target is registered through these same
hooks; a third-party package does the same from a module named in the entry-point group ``ovquant``::

    from ovquant import hookimpl

    @hookimpl
    def register_estimators(register):
        register(MyEstimator)

Registration hooks receive a ``register`` callable. The event hooks are called while a pipeline runs and
are meant for progress bars, loggers and reports; their return values are ignored. Each gets its typed
payload (:mod:`ovquant.events`) as ``event`` and the payload's fields as keyword arguments.

The hook API is versioned by :data:`HOOK_API_VERSION`. A plugin module may set
``ovquant_api_version = N``; ovquant refuses to load it when N is newer than what it implements.
"""
import pluggy

PROJECT = "ovquant"
#: Version of the hook API described in this module. Bumped when a hook changes incompatibly, or when
#: hooks are added that a plugin may need (2: typed event payloads as ``event``, ``run_finished``).
HOOK_API_VERSION = 2

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---- registration --------------------------------------------------------------------------------
@hookspec
def register_estimators(register):
    """Register range estimators: ``register(cls)``.

    ``cls`` subclasses :class:`ovquant.statistics.Estimator` and sets a unique ``name`` (the value of
    ``range_estimator.min.type`` / ``max.type`` in a config). An estimator reduces one sample's tensor to
    a value per sample (per tensor, or per channel); it may offer an in-graph form (OpenVINO ops appended
    to the statistics model) and always has a numpy form.
    """


@hookspec
def register_aggregators(register):
    """Register aggregators: ``register(cls)``.

    ``cls`` subclasses :class:`ovquant.statistics.Aggregator` and sets a unique ``name`` (the value of
    ``range_estimator.min.aggregator`` / ``max.aggregator``). An aggregator folds the per-sample values of
    an estimator over the calibration samples into one value.
    """


@hookspec
def register_algorithms(register):
    """Register algorithms: ``register(cls)``.

    ``cls`` subclasses :class:`ovquant.algorithm.Algorithm` and sets a unique ``name`` (the value of
    ``compression.algorithms[i].name``, e.g. ``MinMaxQuantization``).
    """


@hookspec
def register_hw_targets(register):
    """Register hardware targets: ``register(path)``.

    ``path`` is a JSON file in the schema of docs/hw_targets.md (``importlib.resources`` paths work).
    The file is validated when it is registered; its ``name`` is the ``target_device`` users give.
    """


@hookspec
def register_placement_rules(register):
    """Register placement rules: ``register(rule)``.

    ``rule`` is a callable with a unique ``name``: ``rule(graph) -> {node name: reason}`` on an
    :class:`ovquant.graph.Graph`. The nodes a rule names stay in float where quantizers are placed: they get
    no quantizer on their inputs or weights, and quantizers do not move up through them (docs/hw_targets.md,
    "Nodes left in float"). The report lists each such node with its reason.
    """


# ---- pipeline events -----------------------------------------------------------------------------
# Each event hook gets its payload (an attrs class of ovquant.events) as ``event`` and the payload's
# fields as keyword arguments; an implementation takes any subset of them. Order within a run: per
# stage stage_started, sample_processed per sample, statistics_collected, algorithm_finished per
# algorithm of the stage; run_finished last.
@hookspec
def stage_started(stage, algorithms, n_samples, event):
    """A statistics stage starts (:class:`ovquant.events.StageStarted`): ``stage`` is its index
    (1-based), ``algorithms`` the names it serves, ``n_samples`` how many calibration samples it will
    infer: 0 when the stage collects nothing (it is still announced) or when a stream's length is not
    known in advance."""


@hookspec
def sample_processed(stage, index, n_samples, event):
    """One calibration sample of ``stage`` was inferred and its statistics folded in, in sample order
    (:class:`ovquant.events.SampleProcessed`; for progress bars). Samples served from the statistics cache
    are not inferred and send no event."""


@hookspec
def statistics_collected(stage, n_samples, n_statistics, seconds, event):
    """A statistics stage finished (:class:`ovquant.events.StatisticsCollected`): ``n_statistics``
    values were collected over ``n_samples`` samples (both 0 for a stage that collects nothing)."""


@hookspec
def algorithm_finished(name, seconds, report, event):
    """Algorithm ``name`` finished editing the model (:class:`ovquant.events.AlgorithmFinished`);
    ``report`` is the dict it adds to the run report's ``algorithms``."""


@hookspec
def run_finished(report, outputs, event):
    """A quantization run finished (:class:`ovquant.events.RunFinished`): ``report`` is the run report
    (the dict written as ``<name>.report.json`` when the run writes files), ``outputs`` the paths it wrote
    (``{"xml", "bin", "report"[, "html"]}``; empty for ``ovquant.quantize``). Added in hook API 2."""
