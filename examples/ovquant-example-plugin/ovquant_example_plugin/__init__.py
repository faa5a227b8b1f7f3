"""ovquant-example-plugin: a range estimator, an aggregator, an algorithm and a hardware target for
ovquant, shipped as a separate package (entry point ``example`` in the group ``ovquant``)."""
__version__ = "0.1.0"
