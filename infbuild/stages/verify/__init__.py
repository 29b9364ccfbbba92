"""verify: run every artifact built here on the reference inputs and compare with eager PyTorch."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ... import stage as registry
from ...folder import Outputs
from ...recipe import Recipe
from ...reports import VerifyReport
from ...stage import Stage, register
from ...stamp import Stamp
from ..common import io_fields, variant_fields

if TYPE_CHECKING:
    from ...stage import PlannedStage


class VerifyStage(Stage):
    def upstream(self, recipe: Recipe, planned: Mapping[str, PlannedStage], required: Callable[[PlannedStage], bool]
                 ) -> tuple[str, ...]:
        """The reference and each artifact this host can build; an unbuildable required one blocks (fails) verify."""
        artifacts = [registry.artifacts()[a].name for a in recipe.artifacts()]
        return (*super().upstream(recipe, planned, required),
                *[a for a in artifacts if planned[a].not_buildable is None or required(planned[a])])

    def stale(self, stamp: Stamp) -> str | None:
        return "last verification failed" if stamp.passed is False else None

    def index(self, folder: Path, stamp: Stamp, recipe_entry: dict[str, Any], target_entry: dict[str, Any]) -> None:
        report = VerifyReport.read(folder)
        target_entry["verify"] = report.results if report else {}
        target_entry["_order"] = report.backends if report else []  # for the preferred choice; not in the manifest


def verified_artifacts(planned: Mapping[str, PlannedStage]) -> tuple[str, ...]:
    """The artifact stages verify checks for this recipe (what bench times and package may ship)."""
    return tuple(name for name in planned["verify"].upstream if planned[name].stage.backend)


STAGE = register(VerifyStage(
    "verify", 2, "device", "run every artifact on the reference inputs and compare with eager PyTorch",
    Outputs(("report.json", "report.md"), ("failures.txt",)),
    tools=("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt"),
    fields=lambda r: {"verify": r.verify, "backends": list(r.backends), "outputs": io_fields(r)["outputs"],
                      **variant_fields(r)},
    tolerates_failed=True, needs=("reference",), judges=True))
