"""The variants run with the onnxruntime backend's runner."""
from ..onnx.runner import load

__all__ = ["load"]
