"""export: ``torch.export`` the model (seconds) and write its program's digest — graph and weights, without stack
traces, line numbers or node numbering. The model stages (onnx, aoti and its variants, reference, bench) read that
digest instead of the model's source text: a comment or docstring edit re-exports and stops here (early cut-off,
as Bazel does for an action whose output is unchanged)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...folder import Outputs
from ...stage import Stage, register
from ...stamp import Stamp
from ..common import export_fields
from .info import PROGRAM, SAVED, parameter_count


class ExportStage(Stage):
    def dependent_view(self, stamp: Stamp) -> dict[str, Any]:
        """Its dependents read what the program is (program.json is deterministic), not why it was exported."""
        return {"program": stamp.files.get(PROGRAM, {}).get("sha256")}

    def recorded_parameters(self, folder: Path) -> int:
        return parameter_count(folder)


STAGE = register(ExportStage(
    "export", 2, "portable", "torch.export the model and digest its program (what the model stages are keyed on)",
    Outputs((PROGRAM, SAVED)), tools=("torch",), fields=export_fields, reads_model=True, covers_model=True,
    cut_off_note="model source changed, exported program identical"))
