"""``aoti.json``, beside an AOTInductor package (the aoti stage and its variants write it): the device and torch
release it was compiled for and with what. Its one reader and writer; the stamp vouches for its bytes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import jsonio

INFO = "aoti.json"


@dataclass(frozen=True)
class AotiInfo:
    device: str  # "cpu" or "cuda"
    torch: str  # the release that compiled it (a package runs only with that release)
    inductor_configs: dict[str, Any] = field(default_factory=dict)
    compute_dtype: str | None = None  # a reduced-precision variant's ("bfloat16"); absent for fp32
    cpu_isa_env: str | None = None  # AOTI_CPU_ISA at compile time, when set
    precision_mode: str | None = None  # a reduced-precision variant's: "autocast" or "cast" (absent before it existed)

    def write(self, folder: Path) -> None:
        data: dict[str, Any] = {"device": self.device, "torch": self.torch, "inductor_configs": self.inductor_configs,
                                "cpu_isa_env": self.cpu_isa_env}
        if self.compute_dtype is not None:
            data["compute_dtype"] = self.compute_dtype
        if self.precision_mode is not None:
            data["precision_mode"] = self.precision_mode
        jsonio.write_atomic(folder / INFO, data, durable=False)

    @classmethod
    def read(cls, folder: Path) -> AotiInfo | None:
        """The folder's record, or None (missing, unreadable, or without the device and torch fields)."""
        data = jsonio.read_mapping(folder / INFO)
        if not isinstance(data.get("device"), str) or not isinstance(data.get("torch"), str):
            return None
        configs = data.get("inductor_configs")
        dtype, isa, mode = data.get("compute_dtype"), data.get("cpu_isa_env"), data.get("precision_mode")
        return cls(data["device"], data["torch"], configs if isinstance(configs, dict) else {},
                   dtype if isinstance(dtype, str) else None, isa if isinstance(isa, str) else None,
                   mode if isinstance(mode, str) else None)
