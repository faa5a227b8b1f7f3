"""ovquant: plugin-based post-training quantization for OpenVINO models.

    import ovquant
    int8_model = ovquant.quantize(model, calibration_samples, preset="mixed")
"""
from .errors import OVQuantError, QuantizationFailed
from .hookspecs import HOOK_API_VERSION, hookimpl

__version__ = "0.1.0"
__all__ = ["HOOK_API_VERSION", "Dataset", "ImageOptions", "OVQuantError", "Pipeline", "QuantizationFailed",
           "hookimpl", "quantize", "quantize_with_accuracy_control", "quantize_with_report", "read_model",
           "analyze_sensitivity", "__version__"]

_LAZY = {"quantize": "api", "quantize_with_report": "api", "Dataset": "dataset", "ImageOptions": "dataset",
         "Pipeline": "pipeline", "read_model": "io", "quantize_with_accuracy_control": "accuracy_control",
         "analyze_sensitivity": "sensitivity"}


def __getattr__(name):  # the API pulls in openvino; keep `import ovquant` light for plugin modules
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ovquant' has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__) | set(globals()))
