"""Serving with NVIDIA Triton Inference Server: a model repository per target, its ``config.pbtxt`` files derived
from the recipe and the build (``config``, written by ``pbtxt``), laid out by ``repository``. The Python-backend
model that serves AOTInductor packages (and ONNX through onnxruntime) is ``infbuild.runtime.triton``."""
