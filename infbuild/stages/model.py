"""Build the recipe's model in a worker: import the factory, load weights, check forward()'s parameters,
make sample inputs from the named dims. Problems become FieldErrors that name the recipe field."""
from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FieldError
from ..recipe import Recipe
from ..runtime.backends import NUMPY_DTYPES

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}
SHAPE_LABELS = ("opt", "min", "max")


def import_factory(spec: str, root: Path) -> Any:
    module_name, _, attr_path = spec.partition(":")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's module's problem
        raise FieldError("model.factory", f"cannot import '{module_name}': {type(exc).__name__}: {exc}") from None
    for part in attr_path.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise FieldError("model.factory", f"'{module_name}' has no attribute '{attr_path}'{hint}")
        target = getattr(target, part)
    if not callable(target):
        raise FieldError("model.factory", f"'{spec}' is not callable (it is a {type(target).__name__})")
    return target


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FieldError("model.weights", f"cannot load '{path.name}' with torch.load(weights_only=True): "
                         f"{type(exc).__name__}: {first[:200]}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise FieldError("model.weights", f"'{path.name}' is not a state dict (a mapping of names to tensors)")
    return loaded


def build_model(recipe: Recipe, root: Path, device: str = "cpu") -> torch.nn.Module:
    factory = import_factory(recipe.model.factory, root)
    try:
        model = factory(**recipe.model.kwargs)
    except Exception as exc:  # noqa: BLE001
        raise FieldError("model.factory", f"calling '{recipe.model.factory}' with kwargs {recipe.model.kwargs} raised "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise FieldError("model.factory", f"'{recipe.model.factory}' returned a {type(model).__name__}, "
                         "not a torch.nn.Module")
    if recipe.model.weights:
        state = _state_dict(root / recipe.model.weights)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            parts = []
            if result.missing_keys:
                parts.append(f"missing {', '.join(result.missing_keys[:5])}")
            if result.unexpected_keys:
                parts.append(f"unexpected {', '.join(result.unexpected_keys[:5])}")
            raise FieldError("model.weights", f"does not fit the model: {'; '.join(parts)}")
    check_forward(model, recipe)
    return model.to(device=device, dtype=TORCH_DTYPES[recipe.model.dtype]).eval()


def check_forward(model: torch.nn.Module, recipe: Recipe) -> None:
    """Recipe input names must be forward()'s parameters, and cover the required ones."""
    params = inspect.signature(model.forward).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL,)]
    for spec in recipe.inputs:
        if spec.name not in names:
            close = difflib.get_close_matches(spec.name, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise FieldError(f"inputs.{spec.name}", f"not a parameter of {type(model).__name__}.forward"
                             f"({', '.join(names)}){hint}")
    required = [n for n, p in params.items() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [n for n in required if n not in {i.name for i in recipe.inputs}]
    if missing:
        raise FieldError("inputs", f"{type(model).__name__}.forward requires {', '.join(missing)}, "
                         "which the recipe does not declare")


def shape_labels(recipe: Recipe) -> dict[str, dict[str, tuple[int, ...]]]:
    """Distinct concrete shapes to check: opt, min, max (duplicates dropped, e.g. for static inputs)."""
    labels: dict[str, dict[str, tuple[int, ...]]] = {}
    seen = set()
    for label in SHAPE_LABELS:
        shapes = {i.name: i.concrete(recipe.dims, label) for i in recipe.inputs}
        frozen = tuple(sorted(shapes.items()))
        if frozen not in seen:
            seen.add(frozen)
            labels[label] = shapes
    return labels


def sample_inputs(recipe: Recipe, shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Deterministic random inputs (never zeros) within each input's low..high."""
    out = {}
    for spec in recipe.inputs:
        salt = zlib.crc32(f"{spec.name}:{shapes[spec.name]}".encode())
        rng = np.random.default_rng([seed, salt])
        shape = shapes[spec.name]
        if spec.dtype == "bool":
            value = rng.random(shape) < 0.5
        elif spec.dtype in ("int64", "int32"):
            value = rng.integers(int(spec.low), int(spec.high), size=shape)
        else:
            value = rng.uniform(spec.low, spec.high, size=shape)
        out[spec.name] = np.ascontiguousarray(value.astype(NUMPY_DTYPES[spec.dtype]))
    return out


def to_torch(recipe: Recipe, arrays: dict[str, np.ndarray], device: str = "cpu") -> dict[str, torch.Tensor]:
    dtypes = {i.name: TORCH_DTYPES[i.dtype] for i in recipe.inputs}
    return {name: torch.from_numpy(np.asarray(a)).to(device=device, dtype=dtypes[name]) for name, a in arrays.items()}


def dynamic_shapes(recipe: Recipe) -> dict[str, dict[int, Any] | None]:
    """torch.export dynamic_shapes from the recipe's named dims: one Dim object per name, shared by inputs."""
    dims = {d.name: torch.export.Dim(d.name, min=d.min, max=d.max) for d in recipe.dims.values()}
    return {
        spec.name: ({axis: dims[size] for axis, size in enumerate(spec.shape) if isinstance(size, str)} or None)
        for spec in recipe.inputs
    }


def output_list(result: Any, recipe: Recipe) -> list[torch.Tensor]:
    """The model's outputs in the recipe's order (a tensor, a tuple/list, or a dict by name)."""
    if isinstance(result, torch.Tensor):
        values = [result]
    elif isinstance(result, dict):
        missing = [n for n in recipe.outputs if n not in result]
        if missing:
            raise FieldError("outputs", f"the model returns a dict without {', '.join(missing)}")
        values = [result[n] for n in recipe.outputs]
    elif isinstance(result, (tuple, list)):
        values = list(result)
    else:
        raise FieldError("outputs", f"the model returns a {type(result).__name__}, not tensors")
    if len(values) != len(recipe.outputs):
        raise FieldError("outputs", f"the recipe names {len(recipe.outputs)} output(s) but the model returns {len(values)}")
    return values


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
