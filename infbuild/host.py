"""The machine a build plans for: its fingerprint and the project root (tool lookups)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from .fingerprint import cuda_target, torch_has_cuda

NO_GPU = "no CUDA GPU on this host (nvidia-smi finds none)"


@dataclass(frozen=True)
class Host:
    """The machine planned for: its fingerprint (stamped as is: a contract) and the project root (tool lookups)."""

    fingerprint: Mapping[str, Any]
    root: Path

    @cached_property
    def cuda_target(self) -> str | None:
        """The selected GPU's target slug, or None without a GPU."""
        return cuda_target(dict(self.fingerprint))

    @property
    def cpu_target(self) -> str:
        return str(self.fingerprint["targets"]["cpu"])

    @property
    def torch_has_cuda(self) -> bool:
        return torch_has_cuda(dict(self.fingerprint))

    def tool(self, name: str) -> Any:
        return self.fingerprint["tools"].get(name)
