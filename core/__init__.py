"""ovquant: plugin-based post-training quantization for OpenVINO models.

    import ovquant
    int8_model = ovquant.quantize(model, calibration_samples, preset="mixed")
"""
from .errors import OVQuantError
from .hookspecs import HOOK_API_VERSION, hookimpl

__version__ = "0.1.0"
__all__ = ["HOOK_API_VERSION", "Dataset", "OVQuantError", "Pipeline", "hookimpl", "quantize",
           "quantize_with_report", "__version__"]


def __getattr__(name):  # the API pulls in openvino; keep `import ovquant` light for plugin modules
    if name in ("quantize", "quantize_with_report"):
        from . import api
        return getattr(api, name)
    if name == "Dataset":
        from .dataset import Dataset
        return Dataset
    if name == "Pipeline":
        from .pipeline import Pipeline
        return Pipeline
    raise AttributeError(f"module 'ovquant' has no attribute {name!r}")
