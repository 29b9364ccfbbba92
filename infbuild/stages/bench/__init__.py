"""bench: time the verified artifacts (and eager/torch.compile baselines) and pick the fastest (preferred)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...folder import Outputs
from ...recipe import Recipe
from ...reports import BenchReport, VerifyReport
from ...stage import Stage, UpstreamMissing, register
from ...stamp import Stamp
from ..common import model_fields, variant_fields
from ..verify import verified_artifacts

if TYPE_CHECKING:
    from ...stage import PlannedStage


class BenchStage(Stage):
    def wanted(self, recipe: Recipe) -> bool:
        return bool(recipe.bench["enabled"])

    def upstream(self, recipe: Recipe, planned: Mapping[str, PlannedStage], required: Callable[[PlannedStage], bool]
                 ) -> tuple[str, ...]:
        return ("export", "verify", *verified_artifacts(planned))

    def upstream_view(self, recipe: Recipe, upstream: Mapping[str, tuple[Path, Stamp]]) -> dict[str, Any]:
        """The artifacts' files, and which of them passed verify (not its tolerances)."""
        view = super().upstream_view(recipe, {n: u for n, u in upstream.items() if n != "verify"})
        report = VerifyReport.read(upstream["verify"][0])
        if report is None:
            raise UpstreamMissing("verify (no readable report.json)")
        return {**view, "verify": {"passed": report.verdicts()}}

    def index(self, folder: Path, stamp: Stamp, recipe_entry: dict[str, Any], target_entry: dict[str, Any]) -> None:
        report = BenchReport.read(folder)
        target_entry["bench"] = report.timings() if report else {"primary_shape": None, "threads": None, "results": {}}


STAGE = register(BenchStage(
    "bench", 4, "device", "time verified artifacts and eager/torch.compile baselines; pick the fastest (preferred)",
    Outputs(("report.json", "report.md", "latency.png", "pareto.png")),
    tools=("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt"),
    fields=lambda r: {"bench": r.bench, "backends": list(r.backends), **model_fields(r), **variant_fields(r)},
    needs=("export", "verify"),
    tolerates_failed=True,
    reads_model=True))
