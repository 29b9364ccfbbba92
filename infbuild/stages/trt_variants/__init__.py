"""TensorRT precision variants: an fp16 engine, built the way the installed TensorRT takes precision (TensorRT 11:
the strongly typed fp16 ONNX graph of the ``onnx_fp16`` variant; TensorRT 10: the fp32 graph with ``--fp16``)."""
from __future__ import annotations

from ...folder import Outputs
from ...stage import register
from ..tensorrt import trt_fields
from ..trt_engine import EngineStage

STAGE = register(EngineStage(
    "trt_engine_fp16", 1, "cuda", "build an fp16 TensorRT engine with trtexec (strongly typed on TensorRT 11)",
    Outputs(("model.engine", "layers.json", "profile.json", "times.json", "build.log", "engine.json")),
    tools=("trtexec",), fields=lambda r: {**trt_fields(r), "variant": "fp16"},
    needs=("onnx", "onnx_fp16", "trt_timing_cache"), backend="tensorrt", variant="fp16", precision="fp16",
    module="trt_variants", runner_of="trt_engine"))
