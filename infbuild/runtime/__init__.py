"""Running built artifacts: ``load`` picks and checks the manifest's artifact for this host; runners give
one interface over onnxruntime, AOTInductor packages and TensorRT engines."""
from ..runner import Runner
from .backends import load_backend
from .load import load
from .model import Model

__all__ = ["Model", "Runner", "load", "load_backend"]
