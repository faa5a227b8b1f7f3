"""Errors that ovquant reports to users as one line (the CLI exits with code 2, no traceback)."""


class OVQuantError(Exception):
    """Bad input: the message is one line and names the culprit (key path, node, file or plugin)."""


class ConfigError(OVQuantError):
    """A config key has a wrong type, an unknown name, or a value out of range."""


class PluginError(OVQuantError):
    """A plugin is malformed, registers a duplicate name, or raised inside a hook."""


class ModelError(OVQuantError):
    """The model file is missing, corrupt, or has nothing ovquant can work on."""


class DataError(OVQuantError):
    """Calibration data is missing, empty, or does not fit the model's inputs."""


class HardwareTargetError(OVQuantError):
    """A hardware target file fails its schema, or a requested scheme is not allowed by the target."""


class QuantizationFailed(OVQuantError):
    """The quantized model does not compile or run, gives non-finite outputs, or is far from FP32: the
    output is not written (the CLI exits with code 1)."""
