"""Key fields several stage declarations share (light: no torch)."""
from __future__ import annotations

from typing import Any

from ..recipe import Recipe


def model_fields(recipe: Recipe) -> dict[str, Any]:
    """What defines the model and its I/O: factory, kwargs, dtype, inputs, dims, outputs."""
    d = recipe.to_dict()
    model = {k: d["model"][k] for k in ("factory", "kwargs", "dtype", "attention") if k in d["model"]}
    return {"model": model, "inputs": d["inputs"],
            "dims": d["dims"], "outputs": d["outputs"]}


def trace_sizes(recipe: Recipe) -> dict[str, int]:
    """The sizes exports trace dynamic dims at where that is not their ``opt``: torch.export specialises a dim traced
    at 0 or 1 to that constant, so a dim whose ``opt`` is 1 (and whose max is above it) is traced at 2."""
    return {d.name: 2 for d in recipe.dims.values() if d.min < d.max and d.opt <= 1}


def export_fields(recipe: Recipe) -> dict[str, Any]:
    """What an export reads: the model and its I/O, and the trace sizes where they are not ``opt`` (absent from the
    keys of recipes whose opt sizes are traced, which stay as they were)."""
    trace = trace_sizes(recipe)
    return {**model_fields(recipe), **({"trace": trace} if trace else {})}


def io_fields(recipe: Recipe) -> dict[str, Any]:
    d = recipe.to_dict()
    return {"inputs": d["inputs"], "dims": d["dims"], "outputs": list(recipe.outputs)}
