"""trt_timing_cache: this GPU's TensorRT timing cache, filled by one trtexec build (planned for trt_engine)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...folder import Outputs
from ...recipe import Recipe
from ...stage import UpstreamMissing, register
from ...stamp import Stamp
from ..onnx.info import INFO, graph_digest
from ..tensorrt import TensorrtStage, trt_fields


class TimingCacheStage(TensorrtStage):
    def wanted(self, recipe: Recipe) -> bool:
        return False  # only as trt_engine's need

    def upstream_view(self, recipe: Recipe, upstream: Mapping[str, tuple[Path, Stamp]]) -> dict[str, Any]:
        """The ONNX graph without its weights: weights-only edits keep the timing cache."""
        return {name: {"graph": _graph_digest(folder)} for name, (folder, _) in upstream.items()}


def _graph_digest(onnx_folder: Path) -> str:
    digest = graph_digest(onnx_folder)
    if digest is None:
        raise UpstreamMissing(f"onnx (no graph digest in {onnx_folder / INFO})")
    return digest


STAGE = register(TimingCacheStage(
    "trt_timing_cache", 1, "cuda", "build a TensorRT timing cache with trtexec for this GPU",
    Outputs(("timing.cache", "build.log")), tools=("trtexec",), fields=trt_fields, needs=("onnx",)))
