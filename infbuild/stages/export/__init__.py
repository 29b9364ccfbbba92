"""export: ``torch.export`` the model (seconds) and write its program's digest — graph and weights, without stack
traces, line numbers or node numbering. The model stages (onnx, aoti and its variants, reference, bench) read that
digest instead of the model's source text: a comment or docstring edit re-exports and stops here (early cut-off,
as Bazel does for an action whose output is unchanged)."""
from __future__ import annotations

from typing import Any

from ...folder import Outputs
from ...stage import Stage, register
from ...stamp import Stamp
from ..common import export_fields

PROGRAM = "program.json"
SAVED = "program.pt2"  # torch.export.save of the same program (its bytes are not what dependents key on)


class ExportStage(Stage):
    def dependent_view(self, stamp: Stamp) -> dict[str, Any]:
        """Its dependents read what the program is (program.json is deterministic), not why it was exported."""
        return {"program": stamp.files.get(PROGRAM, {}).get("sha256")}


STAGE = register(ExportStage(
    "export", 2, "portable", "torch.export the model and digest its program (what the model stages are keyed on)",
    Outputs((PROGRAM, SAVED)), tools=("torch",), fields=export_fields, reads_model=True, covers_model=True,
    cut_off_note="model source changed, exported program identical"))
