"""Build a TensorRT precision variant's engine (in the worker)."""
from __future__ import annotations

from ... import trtexec
from ..request import Job
from ..trt_engine.run import build


def run(job: Job) -> None:
    from_reduced_graph, flags = trtexec.reduced_precision(job.tools["version"], "fp16")
    onnx = job.upstream["onnx_fp16" if from_reduced_graph else "onnx"] / "model.onnx"
    print(f"[trt_engine_fp16] TensorRT {job.tools['version']}: "
          + ("the strongly typed fp16 graph" if from_reduced_graph else "the fp32 graph with " + " ".join(flags)), flush=True)
    build(job, onnx, flags)
