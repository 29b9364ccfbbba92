"""reference stage: deterministic sample inputs at each distinct shape, plus the recipe's own samples, and eager
PyTorch outputs for each."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from ..model import build_model, output_list, shape_labels, to_numpy, to_torch, user_samples
from ..request import Job
from ..samples import sample_inputs
from . import SECTION


def run(job: Job) -> None:
    recipe, root, out = job.recipe, job.root, job.out
    model = build_model(recipe, root)
    seed = SECTION.of(recipe)["seed"]
    meta: dict[str, Any] = {"seed": seed, "torch": torch.__version__, "shapes": {}}
    samples = {label: sample_inputs(recipe, shapes, seed) for label, shapes in shape_labels(recipe).items()}
    for label, arrays in {**samples, **user_samples(recipe, root)}.items():
        shapes = {k: tuple(v.shape) for k, v in arrays.items()}
        with torch.inference_mode():
            outputs = output_list(model(**to_torch(recipe, arrays)), recipe)
        payload = {f"input.{k}": v for k, v in arrays.items()}
        payload.update({f"output.{n}": to_numpy(t) for n, t in zip(recipe.outputs, outputs)})
        np.savez(out / f"{label}.npz", **payload)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        meta["shapes"][label] = {"inputs": {k: list(v) for k, v in shapes.items()},
                                 "outputs": {n: list(t.shape) for n, t in zip(recipe.outputs, outputs)}}
        print(f"[reference] {recipe.name} @ {label}: " + ", ".join(f"{k}{list(v)}" for k, v in shapes.items()), flush=True)
    (out / "reference.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
