"""triton: a Triton Inference Server model repository for the target (``repository/``), from the recipe's
``triton`` section, its verified artifacts and the manifest's choices; ``triton.json`` says what is served how."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...folder import Outputs
from ...recipe import Recipe
from ...stage import Stage, files_view, register
from ...stamp import Stamp
from ..common import io_fields
from ..verify import verified_artifacts

if TYPE_CHECKING:
    from ...stage import PlannedStage

SUMMARY = "triton.json"
REPOSITORY = "repository"


class TritonStage(Stage):
    def hardware(self, recipe: Recipe, fingerprint: Any, device: str) -> dict[str, Any]:
        """What it assembles depends on its artifacts (their keys, upstream) and its target folder, not on this host."""
        return {}

    def wanted(self, recipe: Recipe) -> bool:
        return recipe.triton is not None

    def upstream(self, recipe: Recipe, planned: Mapping[str, PlannedStage], required: Callable[[PlannedStage], bool]
                 ) -> tuple[str, ...]:
        return ("verify", "reference", *(("bench",) if "bench" in planned else ()), *verified_artifacts(planned))

    def upstream_view(self, recipe: Recipe, upstream: Mapping[str, tuple[Path, Stamp]]) -> dict[str, Any]:
        """What the repository is made of: the served artifacts (the preferred choice, not timings), the reference's
        shapes, and the other GPU targets' verified engines where a TensorRT engine is served."""
        from ...package.contents import selection
        from ...triton.repository import fleet_engines, served_by

        assert recipe.triton is not None
        folders = {name: folder for name, (folder, _) in upstream.items()}
        chosen = selection(recipe.to_dict(), folders, include=recipe.triton["artifacts"])
        fleet = {artifact: {e.target: e.key for e in fleet_engines(folders[art["stage"]].parent.parent, art["stage"], artifact,
                                                                       rehash=False)}
                 for artifact, art in chosen["artifacts"].items()
                 if served_by(artifact, recipe.triton["onnxruntime"]) == "tensorrt_plan"}
        return {"served": chosen, "reference": files_view(upstream["reference"][1]), **({"fleet": fleet} if fleet else {})}

    def index(self, folder: Path, stamp: Stamp, recipe_entry: dict[str, Any], target_entry: dict[str, Any]) -> None:
        from ...manifest import read_json

        summary = read_json(folder / SUMMARY) or {}
        target_entry["triton"] = {"repository": f"{folder.parent.parent.name}/{folder.parent.name}/{folder.name}/{REPOSITORY}",
                                  "models": summary.get("models") or {}}


STAGE = register(TritonStage(
    "triton", 1, "device", "write a Triton Inference Server model repository (config.pbtxt per served artifact)",
    Outputs((SUMMARY,), (f"{REPOSITORY}/*",)),
    fields=lambda r: {"triton": r.triton, "recipe_name": r.name, **io_fields(r), "runtime": r.runtime,
                      "threads": r.bench["threads"]},
    needs=("verify",)))
