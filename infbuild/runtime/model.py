"""A loaded artifact (``Model``): called with keyword arrays named after the recipe's inputs, checked, run by its
backend's runner."""
from __future__ import annotations

import operator
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ..runner import Runner
from .backends import NUMPY_DTYPES, to_numpy

# One C-level call per input on the fast path; the class keeps array-like objects with an array's shape and dtype
# (and ndarray subclasses) off it.
_SHAPE_DTYPE = operator.attrgetter("shape", "dtype", "__class__")


class Model:
    """A loaded artifact: call with keyword arrays named after the recipe's inputs; get {output: array}.

    Every call is checked (names, dtypes, ranks, each dim against the recipe's min..max and bound consistently,
    NaN/inf) at a cost of microseconds: the shape checks run once per distinct set of input shapes and dtypes
    (remembered, up to ``SHAPES_REMEMBERED``), the finiteness check is one float64 sum per float input (NaN and
    infinities survive a sum; finite float32/float16 values cannot overflow it), and numpy arrays pass through
    without a copy (a strided one is made contiguous by the runner)."""

    SHAPES_REMEMBERED = 256

    def __init__(self, recipe: str, target: str, backend: str, io: dict[str, Any], runner: Runner,
                 check_finite: bool = True) -> None:
        self.recipe, self.target, self.backend = recipe, target, backend
        self.inputs: dict[str, Any] = io["inputs"]
        self.dims: dict[str, Any] = io["dims"] or {}
        self.outputs: list[str] = io["outputs"]
        self.runner = runner
        self.check_finite = check_finite
        self._names = self.inputs.keys()
        self._dtypes = {name: np.dtype(NUMPY_DTYPES[spec["dtype"]]) for name, spec in self.inputs.items()}
        self._floats = [n for n, dtype in self._dtypes.items() if dtype.kind == "f"]
        # The (shape, dtype, numpy.ndarray) of each input in the recipe's order, seen valid (numpy arrays only; up to
        # SHAPES_REMEMBERED). A tensor's dtype never equals numpy's: it is checked anew.
        self._order = tuple(self.inputs)
        self._seen: set[tuple[tuple[tuple[int, ...], np.dtype[Any], type], ...]] = set()

    def __repr__(self) -> str:
        return f"<infbuild Model {self.recipe} {self.backend} on {self.target}>"

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        # The fast path in as few steps as possible (after a model call the interpreter runs from cold caches: each
        # step costs several times what it does in a loop): the recipe's names and no others, numpy arrays at shapes
        # and dtypes seen valid (C-level maps, no Python frame), go to the runner as they are; only NaN/inf is left
        # to check. ``inputs`` is a fresh dict (keyword arguments).
        try:
            seen = tuple(map(_SHAPE_DTYPE, map(inputs.__getitem__, self._order))) in self._seen
        except (KeyError, AttributeError, TypeError):  # a name missing, not arrays, an unhashable shape
            seen = False
        if seen and len(inputs) == len(self._order):
            if self._floats and self.check_finite:
                self._check_finite(inputs)
            return self.runner(inputs)
        return self.runner(self.validate(inputs))

    def validate(self, given: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The inputs as numpy arrays the runner takes, or an InputError naming what is wrong (and, for numpy
        arrays, their shapes and dtypes remembered for the fast path)."""
        arrays = self._checked_arrays(given)
        if len(self._seen) < self.SHAPES_REMEMBERED and all(isinstance(v, np.ndarray) for v in given.values()):
            self._seen.add(tuple(map(_SHAPE_DTYPE, map(arrays.__getitem__, self._order))))
        if self.check_finite:
            self._check_finite(arrays)
        return arrays

    def _check_finite(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name in self._floats:
            if not np.isfinite(arrays[name].sum(dtype=np.float64)):
                raise InputError(f"{self.recipe}: input {name} holds NaN or infinite values "
                                 "(load(..., check_finite=False) to allow them)")

    def _checked_arrays(self, given: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if given.keys() != self._names:
            self._names_problem(given)
        arrays = {name: _as_array(self.recipe, name, given[name]) for name in self._names}
        self._check_shapes(arrays)
        return arrays

    def _names_problem(self, given: Mapping[str, Any]) -> None:
        missing = [n for n in self.inputs if n not in given]
        unknown = [n for n in given if n not in self.inputs]
        raise InputError(f"{self.recipe}: inputs must be {', '.join(self.inputs)}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unknown {', '.join(unknown)}" if unknown else ""))

    def _check_shapes(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Each input's dtype and rank, its fixed axes, its named dims within min..max and equal wherever a name
        recurs (the slow path: once per new set of shapes)."""
        bound: dict[str, tuple[int, str]] = {}
        for name, spec in self.inputs.items():
            array, expected = arrays[name], self._dtypes[name]
            if array.dtype != expected:
                raise InputError(f"{self.recipe}: input {name} has dtype {array.dtype}, expected {expected} "
                                 f"(recipe dtype {spec['dtype']})")
            shape = spec["shape"]
            if array.ndim != len(shape):
                raise InputError(f"{self.recipe}: input {name} has rank {array.ndim} {list(array.shape)}, "
                                 f"expected rank {len(shape)} {shape}")
            for axis, (size, want) in enumerate(zip(array.shape, shape)):
                if isinstance(want, int):
                    if size != want:
                        raise InputError(f"{self.recipe}: input {name} axis {axis} is {size}, expected {want}")
                    continue
                dim = self.dims[want]
                if not dim["min"] <= size <= dim["max"]:
                    raise InputError(f"{self.recipe}: input {name} axis {axis} ({want}) is {size}, outside "
                                     f"{dim['min']}..{dim['max']} that the artifacts were built for")
                if want in bound and bound[want][0] != size:
                    raise InputError(f"{self.recipe}: dim {want} is {size} in {name} but {bound[want][0]} in {bound[want][1]}")
                bound[want] = (size, name)


def _as_array(recipe: str, name: str, value: Any) -> np.ndarray:
    """An input as a numpy array (torch tensors included); a ragged or non-numeric value is an InputError."""
    if hasattr(value, "detach"):  # a torch tensor
        value = to_numpy(value)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{recipe}: input {name} is not an array ({str(exc).splitlines()[0][:200]})") from None
    if array.dtype == object:
        raise InputError(f"{recipe}: input {name} is not a numeric array (ragged nesting or mixed types)")
    return array
