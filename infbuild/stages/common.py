"""Key fields several stage declarations share (light: no torch)."""
from __future__ import annotations

from typing import Any

from ..recipe import Recipe


def model_fields(recipe: Recipe) -> dict[str, Any]:
    """What defines the model and its I/O: factory, kwargs, dtype, inputs, dims, outputs."""
    d = recipe.to_dict()
    return {"model": {k: d["model"][k] for k in ("factory", "kwargs", "dtype")}, "inputs": d["inputs"],
            "dims": d["dims"], "outputs": d["outputs"]}


def io_fields(recipe: Recipe) -> dict[str, Any]:
    d = recipe.to_dict()
    return {"inputs": d["inputs"], "dims": d["dims"], "outputs": list(recipe.outputs)}
