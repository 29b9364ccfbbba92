"""trt_engine: the TensorRT engine (the tensorrt backend's artifact), built by trtexec with the timing cache."""
from __future__ import annotations

from ...folder import Outputs
from ...stage import register
from ..tensorrt import TensorrtStage, trt_fields


class EngineStage(TensorrtStage):
    def unavailable(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("tensorrt") is None:
            return "the tensorrt Python package is not installed"
        if importlib.util.find_spec("torch") is None:
            return "torch is needed for TensorRT I/O buffers"
        return None


STAGE = register(EngineStage(
    "trt_engine", 1, "cuda", "build a TensorRT engine with trtexec (layer info, profile, times, build log)",
    Outputs(("model.engine", "layers.json", "profile.json", "times.json", "build.log", "engine.json")),
    tools=("trtexec",), fields=trt_fields, needs=("onnx", "trt_timing_cache"), backend="tensorrt"))
