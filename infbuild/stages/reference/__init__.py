"""reference: sample inputs and eager PyTorch outputs, what every artifact is verified against."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from ...folder import Outputs
from ...section import Section, declare
from ...stage import Stage, register
from ...stamp import Stamp
from ..common import model_fields
from .layout import META, OPT


class ReferenceStage(Stage):
    def index(self, folder: Path, stamp: Stamp, recipe_entry: dict[str, Any], target_entry: dict[str, Any]) -> None:
        fields = (stamp.inputs or {}).get("recipe") or {}  # the I/O contract the runtime validates inputs against
        recipe_entry["io"] = {k: fields.get(k) for k in ("inputs", "dims", "outputs")}


class ReferenceOptions(TypedDict):
    seed: int


SECTION: Section[ReferenceOptions] = declare(Section(
    path=("stages", "reference"), schema_file=Path(__file__).with_name("section.schema.json"),
                           defaults={"seed": 0}))

STAGE = register(ReferenceStage(
    "reference", 1, "portable", "capture sample inputs and eager PyTorch outputs at the min/opt/max shapes",
    Outputs((META, OPT), ("*.npz",)), tools=("torch",),
    fields=lambda r: {**model_fields(r), "options": SECTION.of(r)}, needs=("export",),
    reads_model=True))
