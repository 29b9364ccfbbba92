"""Generated sample inputs: deterministic random arrays within each input's range, at given shapes (no torch:
the reference stage draws them for eager PyTorch, the int8 calibration for onnxruntime)."""
from __future__ import annotations

import zlib

import numpy as np

from ..errors import FieldError
from ..recipe import Recipe
from ..runtime.backends import NUMPY_DTYPES


def sample_inputs(recipe: Recipe, shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Deterministic random inputs (never zeros) within each input's low..high."""
    out: dict[str, np.ndarray] = {}
    for spec in recipe.inputs:
        salt = zlib.crc32(f"{spec.name}:{shapes[spec.name]}".encode())
        rng = np.random.default_rng([seed, salt])
        try:
            if spec.values:
                drawn = rng.choice(np.asarray(spec.values, dtype=np.float64), size=shapes[spec.name])
                out[spec.name] = np.ascontiguousarray(drawn.astype(NUMPY_DTYPES[spec.dtype]))
            else:
                out[spec.name] = _sample(rng, spec.dtype, spec.low, spec.high, shapes[spec.name])
        except (ValueError, OverflowError) as exc:  # validate refuses such ranges; a hand-made Recipe may not
            raise FieldError(f"inputs.{spec.name}", f"cannot draw samples in {spec.low}..{spec.high} as "
                             f"{spec.dtype}: {exc}") from None
    return out


def _sample(rng: np.random.Generator, dtype: str, low: float, high: float, shape: tuple[int, ...]) -> np.ndarray:
    """One input's random values: bool coin flips, integers in [low, high), floats in [low, high)."""
    value: np.ndarray
    if dtype == "bool":
        value = rng.random(shape) < 0.5
    elif dtype in ("int64", "int32"):
        value = rng.integers(int(low), int(high), size=shape)
    else:
        value = rng.uniform(low, high, size=shape)
    return np.ascontiguousarray(value.astype(NUMPY_DTYPES[dtype]))
