"""aoti stage: torch.export + AOTInductor into a model.pt2 package for this target (cpu or cuda)."""
from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ...errors import StageFailed
from ..model import build_model, export_program, reduced_precision, saved_program, to_torch, trace_shapes
from ..request import Job
from ..samples import sample_inputs
from . import SECTION
from .info import AotiInfo

# Inputs are validated by infbuild's runtime; without this AOTI's own optional check rejects a lower bound of 1.
DEFAULT_INDUCTOR_CONFIGS = {"aot_inductor.check_lowerbound": False}


def compile_and_package(program: torch.export.ExportedProgram, path: Path, configs: dict[str, Any], build_dir: Path) -> None:
    """``aoti_compile_and_package`` with the generated sources and .so in a private folder.

    By default AOTInductor writes them into the shared inductor cache folder under a name derived from the
    generated code, which is the same for two models that differ only in weights; two builds compiling at
    once (``doit -n 2``, or two checkouts) could then package each other's half-written files. The kernel and
    header caches stay shared (and warm). This is the two-step path torch documents for packaging.
    """
    from torch._inductor.package import package_aoti

    try:
        module = program.module(check_guards=False)
    except TypeError:  # torch releases without check_guards
        module = program.module()
    args, kwargs = program.example_inputs
    build_dir.mkdir()
    try:
        files = torch._inductor.aot_compile(module, args, kwargs, options={
            **configs, "aot_inductor.package": True, "aot_inductor.output_path": str(build_dir)})
        assert isinstance(files, list), f"aot_compile with aot_inductor.package returned {type(files).__name__}"
        package_aoti(str(path), files)
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)


def run(job: Job) -> None:
    build(job)


def build(job: Job, reduced: tuple[torch.dtype, str] | None = None) -> None:
    """Export and compile the model (``reduced``: computing in that dtype, under autocast or the whole model cast,
    with the recipe's input and output dtypes)."""
    recipe, root, out, device = job.recipe, job.root, job.out, job.device
    options = SECTION.of(recipe)
    configs = {**DEFAULT_INDUCTOR_CONFIGS, **({"max_autotune": True} if options["max_autotune"] else {}),
               **options["inductor_configs"]}
    started = time.perf_counter()
    # fp32 on the CPU compiles the export stage's program; another dtype or device exports the model as it computes
    program = saved_program(job.upstream) if reduced is None and device == "cpu" else None
    if program is None:
        model = build_model(recipe, root, device=device)
        if reduced is not None:
            model = reduced_precision(model, *reduced, device)
        example = to_torch(recipe, sample_inputs(recipe, trace_shapes(recipe), seed=0), device=device)
        print(f"[aoti] exporting {recipe.name} with torch.export", flush=True)
        program = export_program(recipe, model, example)
    print(f"[aoti] compiling with AOTInductor for {device} (this takes a while on a cold cache)", flush=True)
    path = out / "model.pt2"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile_and_package(program, path, configs, out / ".aoti-build")
    except Exception as exc:
        raise StageFailed(f"AOTInductor compile failed: {type(exc).__name__}: {str(exc).strip()[:2000]}") from None
    dtype, mode = reduced or (None, None)
    AotiInfo(device, torch.__version__, configs, str(dtype).removeprefix("torch.") if dtype is not None else None,
             os.environ.get("AOTI_CPU_ISA"), mode).write(out)
    print(f"[aoti] wrote {path.name} ({path.stat().st_size} bytes) in {time.perf_counter() - started:.1f}s", flush=True)
