"""trt_timing_cache stage: one trtexec build (no engine kept, no inference) to fill this GPU's timing cache."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import trtexec
from ..recipe import Recipe


def run(recipe: Recipe, root: Path, out: Path, upstream: dict[str, Path], device: str, tools: dict[str, Any]) -> None:
    argv = trtexec.timing_cache_argv(Path(tools["trtexec"]), recipe, tools["version"], upstream["onnx"] / "model.onnx",
                                     out / "timing.cache")
    trtexec.run(argv, out / "build.log")
