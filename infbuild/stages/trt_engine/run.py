"""trt_engine stage: trtexec builds the engine with this GPU's timing cache (loaded from a scratch copy, so the
cache stage's file is never rewritten), profiles it and exports layer info, profile and times."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ... import trtexec
from ...errors import StageFailed
from ..request import Job

EXPORTS = ("model.engine", "layers.json", "profile.json", "times.json")


def run(job: Job) -> None:
    build(job, job.upstream["onnx"] / "model.onnx")


def build(job: Job, onnx: Path, extra: tuple[str, ...] = ()) -> None:
    """Build the engine from ``onnx`` (with ``extra`` builder flags: a precision variant's)."""
    recipe, out, upstream, tools = job.recipe, job.out, job.upstream, job.tools
    scratch_cache = out / ".timing.cache.scratch"
    shutil.copyfile(upstream["trt_timing_cache"] / "timing.cache", scratch_cache)
    argv = trtexec.engine_argv(Path(tools["trtexec"]), recipe, tools["version"], onnx=onnx, cache=scratch_cache, out=out, extra=extra)
    try:
        trtexec.run(argv, out / "build.log")
    finally:
        scratch_cache.unlink(missing_ok=True)
    missing = [name for name in EXPORTS if not (out / name).is_file() or (out / name).stat().st_size == 0]
    if missing:
        raise StageFailed(f"trtexec exited 0 but did not write {', '.join(missing)} (see build.log)")
    info = {"tensorrt": tools["version"], "trtexec": tools["trtexec"], "argv": [a.replace(str(out), "<stage dir>") for a in argv[1:]]}
    (out / "engine.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
