"""Running built artifacts: ``load`` picks and checks the manifest's artifact for this host; runners give
one interface over onnxruntime, AOTInductor packages and TensorRT engines."""
from .backends import load_backend
from .load import Model, load
from .runner import Runner

__all__ = ["Model", "Runner", "load", "load_backend"]
