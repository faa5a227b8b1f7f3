"""ovquant: plugin-based post-training quantization for OpenVINO models."""
from .errors import OVQuantError
from .hookspecs import HOOK_API_VERSION, hookimpl

__version__ = "0.1.0"
__all__ = ["HOOK_API_VERSION", "OVQuantError", "hookimpl", "__version__"]
