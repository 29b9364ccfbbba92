"""Key fields several stage declarations share (light: no torch)."""
from __future__ import annotations

from typing import Any

from ..recipe import Recipe


def model_fields(recipe: Recipe) -> dict[str, Any]:
    """What defines the model and its I/O: factory, kwargs, dtype, inputs, dims, outputs."""
    d = recipe.to_dict()
    return {"model": {k: d["model"][k] for k in ("factory", "kwargs", "dtype")}, "inputs": d["inputs"],
            "dims": d["dims"], "outputs": d["outputs"]}


def variant_fields(recipe: Recipe) -> dict[str, Any]:
    """The variants and their budgets, and the runtime settings, for the stages that judge or time every artifact
    (absent from the keys of recipes without them, which stay as they were)."""
    fields: dict[str, Any] = {"runtime": recipe.runtime} if recipe.runtime else {}
    if not recipe.variants:
        return fields
    return {**fields, "variants": {b: list(v) for b, v in recipe.variants.items()},
            "budgets": {p: recipe.budget(p) for p in ("fp16", "bf16", "int8")}}


def io_fields(recipe: Recipe) -> dict[str, Any]:
    d = recipe.to_dict()
    return {"inputs": d["inputs"], "dims": d["dims"], "outputs": list(recipe.outputs)}
