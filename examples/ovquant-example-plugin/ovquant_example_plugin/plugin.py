"""The module ovquant loads through the entry point ``example = "ovquant_example_plugin.plugin"``.

Every hook gets a ``register`` callable; what it registers is then known to configs by name:

* ``mse_range``     range estimator    ``range_estimator.max.type`` (or ``min.type``)
* ``trimmed_mean``  aggregator         ``range_estimator.max.aggregator``
* ``SQNRReport``    algorithm          ``compression.algorithms[i].name``
* ``CPU_W4A8``      hardware target    ``compression.target_device``

Two more estimators: ``mse_range_w4``, the same search on the 4-bit grid of ``CPU_W4A8``'s weights
(``weights.range_estimator.max.type``), and ``sqnr_terms``, the helper ``SQNRReport`` asks the engine
for.
"""
from importlib.resources import files

from ovquant import hookimpl

from . import usage
from .mse_range import MSERangeEstimator, MSERangeW4Estimator
from .sqnr_report import SQNRReport, SQNRTermsEstimator
from .trimmed_mean import TrimmedMeanAggregator

#: the ovquant hook API this module is written against; an ovquant that implements an older one refuses it
ovquant_api_version = 1


@hookimpl
def register_estimators(register):
    register(MSERangeEstimator)
    register(MSERangeW4Estimator)
    register(SQNRTermsEstimator)


@hookimpl
def register_aggregators(register):
    register(TrimmedMeanAggregator)


@hookimpl
def register_algorithms(register):
    register(SQNRReport)


@hookimpl
def register_hw_targets(register):
    register(files("ovquant_example_plugin") / "cpu_w4a8.json")


@hookimpl
def stage_started(stage, algorithms, n_samples):
    if stage == 1:   # a pipeline run starts: count this run's work only (see usage.py)
        usage.reset()
