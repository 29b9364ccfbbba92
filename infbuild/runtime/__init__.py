"""Running built artifacts: one interface over onnxruntime and AOTInductor packages (TensorRT later)."""
from .backends import Runner, load_backend

__all__ = ["Runner", "load_backend"]
