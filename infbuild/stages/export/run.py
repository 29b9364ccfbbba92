"""export stage: torch.export the model at the trace shapes; write the program (program.pt2, what the fp32 CPU model
stages compile) and its digest (program.json, what their keys read)."""
from __future__ import annotations

import time

import torch

from ..model import build_model, export_program, to_torch, trace_shapes
from ..request import Job
from ..samples import sample_inputs
from .info import SAVED, ProgramInfo
from .program import program_digest


def run(job: Job) -> None:
    recipe, root, out = job.recipe, job.root, job.out
    model = build_model(recipe, root)
    example = to_torch(recipe, sample_inputs(recipe, trace_shapes(recipe), seed=0))
    started = time.perf_counter()
    program = export_program(recipe, model, example)
    digest = program_digest(program)
    torch.export.save(program, out / SAVED)
    ProgramInfo(**digest, torch=torch.__version__).write(out)
    print(f"[export] {recipe.name}: program {digest['digest'][:12]} ({digest['nodes']} nodes, {digest['parameters']} "
          f"parameters) in {time.perf_counter() - started:.1f}s", flush=True)
