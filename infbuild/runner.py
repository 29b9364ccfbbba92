"""What loading an artifact gives: a runner, called with a dict of numpy arrays named after the recipe's inputs,
returning a dict of numpy arrays named after its outputs."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import numpy as np


class Runner(Protocol):
    backend: str
    detail: str  # e.g. the execution provider or device actually used

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]: ...
