"""Backend runners: call with a dict of numpy arrays named after the recipe's inputs, get a dict of numpy arrays
named after its outputs. Each artifact stage owns its runner (``infbuild/stages/<name>/runner.py``); heavy
imports happen only when a backend is loaded."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import stage as registry
from ..errors import ArtifactError
from ..runner import Runner

# numpy has no bfloat16: such arrays travel as float32 and are cast where they reach torch.
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.float32, "int64": np.int64,
                "int32": np.int32, "bool": np.bool_}


def to_numpy(t: Any) -> np.ndarray:
    """A torch tensor as a numpy array (bfloat16 as float32: numpy has no bfloat16). A CPU tensor that needs no
    gradient shares its memory at once (a model's outputs, per call); any other is detached, moved and cast first."""
    try:
        return t.numpy()
    except (TypeError, RuntimeError):  # bfloat16 or another device (TypeError), requires grad (RuntimeError)
        import torch

        t = t.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def unavailable_reason(backend: str) -> str | None:
    """Why this host cannot run a backend's artifacts (None when it can)."""
    return registry.for_backend(backend).unavailable()


def load_backend(backend: str, folder: Path, outputs: tuple[str, ...], input_dtypes: Mapping[str, str],
                 device: str = "cpu", threads: int | None = None, runtime: Mapping[str, Any] | None = None) -> Runner:
    """Load one built artifact from its stage folder with the runner of the stage that built it (on the device
    the artifact was built for, where it records one; else ``device``)."""
    stages = registry.artifacts()
    if backend not in stages:
        raise ArtifactError(f"unknown backend '{backend}' (known: {', '.join(stages)})")
    settings = (runtime or {}).get(stages[backend].backend or "")  # the recipe's runtime.<backend>
    return stages[backend].load_runner(folder, outputs, input_dtypes, device, threads,
                                       dict(settings) if isinstance(settings, dict) else {})
