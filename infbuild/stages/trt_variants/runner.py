"""The variants run with the tensorrt backend's runner."""
from ..trt_engine.runner import load

__all__ = ["load"]
