"""reference stage: deterministic sample inputs at each distinct shape, plus the recipe's own samples, and eager
PyTorch outputs for each."""
from __future__ import annotations

import torch

from ...runtime.backends import to_numpy
from ..model import build_model, output_list, shape_labels, to_torch, user_samples
from ..request import Job
from ..samples import sample_inputs
from . import SECTION
from .layout import ReferenceWriter


def run(job: Job) -> None:
    recipe, root, out = job.recipe, job.root, job.out
    model = build_model(recipe, root)
    seed = SECTION.of(recipe)["seed"]
    written = ReferenceWriter(out, seed, torch.__version__)
    samples = {label: sample_inputs(recipe, shapes, seed) for label, shapes in shape_labels(recipe).items()}
    for label, arrays in {**samples, **user_samples(recipe, root)}.items():
        with torch.inference_mode():
            outputs = output_list(model(**to_torch(recipe, arrays)), recipe)
        written.add(label, arrays, {n: to_numpy(t) for n, t in zip(recipe.outputs, outputs)})
        print(f"[reference] {recipe.name} @ {label}: " + ", ".join(f"{k}{list(v.shape)}" for k, v in arrays.items()),
              flush=True)
    written.close()
