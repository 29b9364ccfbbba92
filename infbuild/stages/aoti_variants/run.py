"""Compile one reduced-precision AOTInductor variant (in the worker)."""
from __future__ import annotations

import torch

from ..aoti.run import build
from ..request import Job
from . import SECTION


def run(job: Job) -> None:
    build(job, ({"aoti_bf16": torch.bfloat16, "aoti_fp16": torch.float16}[job.stage], SECTION.of(job.recipe)["mode"]))
