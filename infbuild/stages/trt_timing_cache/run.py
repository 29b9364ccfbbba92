"""trt_timing_cache stage: one trtexec build (no engine kept, no inference) to fill this GPU's timing cache."""
from __future__ import annotations

from pathlib import Path

from ... import trtexec
from ..request import Job


def run(job: Job) -> None:
    recipe, out, upstream, tools = job.recipe, job.out, job.upstream, job.tools
    argv = trtexec.timing_cache_argv(Path(tools["trtexec"]), recipe, tools["version"], onnx=upstream["onnx"] / "model.onnx",
                                     cache=out / "timing.cache")
    trtexec.run(argv, out / "build.log")
