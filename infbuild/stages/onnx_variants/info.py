"""``variant.json``, beside each onnxruntime variant: which link of which chain it is, what the link did (fused
operator counts, quantization and calibration with their measured error) or why onnxruntime's tools declined it,
and the model's size before and after. Its one reader and writer."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import jsonio
from ...records import from_flat, to_flat

INFO = "variant.json"


@dataclass(frozen=True)
class VariantInfo:
    variant: str  # "int8_dynamic", a chain "onnxscript_fused+int8_dynamic"
    chain: list[str] | None = None  # a chain's links in order (absent for a variant of the export itself)
    source: str | None = None  # a chain's stage one link shorter, whose model.onnx this link read
    failed: str | None = None  # why onnxruntime's tools could not build it (then there is no model.onnx)
    onnxruntime: str | None = None
    bytes: int | None = None  # model.onnx's size
    source_bytes: int | None = None  # the source model.onnx's size
    seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # what the link records ("fused", "calibration", ...)

    def write(self, folder: Path) -> None:
        jsonio.write_atomic(folder / INFO, to_flat(self, "details", drop_none=True), durable=False)

    @classmethod
    def read(cls, folder: Path) -> VariantInfo | None:
        data = jsonio.read_mapping(folder / INFO)
        return from_flat(cls, data, "details") if isinstance(data.get("variant"), str) else None


def declined_in(folder: Path) -> str | None:
    """Why the variant in ``folder`` was declined (None: it was built, or there is no record)."""
    info = VariantInfo.read(folder)
    return str(info.failed) if info and info.failed else None
