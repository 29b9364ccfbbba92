"""``triton.json``, beside the target's model repository: which artifact each served model is, on which platform,
with what batching (the manifest's ``triton`` entry lists them). Its one reader and writer."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import jsonio

SUMMARY = "triton.json"


@dataclass(frozen=True)
class TritonSummary:
    preferred: str | None  # the manifest's preferred artifact when the repository was written
    target: str
    version: int  # the model version folder every model is written under
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # model name -> what it serves, how

    def write(self, folder: Path) -> None:
        jsonio.write_atomic(folder / SUMMARY, {"preferred": self.preferred, "target": self.target,
                                               "version": self.version, "models": self.models}, durable=False)

    @classmethod
    def read(cls, folder: Path) -> TritonSummary | None:
        data = jsonio.read_mapping(folder / SUMMARY)
        models, target, version = data.get("models"), data.get("target"), data.get("version")
        if not isinstance(models, dict) or not isinstance(target, str) or not isinstance(version, int):
            return None
        preferred = data.get("preferred")
        return cls(preferred if isinstance(preferred, str) else None, target, version, models)
