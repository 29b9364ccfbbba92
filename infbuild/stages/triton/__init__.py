"""triton: a Triton Inference Server model repository for the target (``repository/``), from the recipe's
``triton`` section, its verified artifacts and the manifest's choices; ``triton.json`` says what is served how."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...folder import Outputs
from ...options import TritonOptions
from ...recipe import BACKENDS, Recipe, leading_dim
from ...section import Add, Section, declare, obj
from ...stage import Stage, files_view, register
from ...stamp import Stamp
from ..common import io_fields
from ..verify import verified_artifacts
from .summary import SUMMARY, TritonSummary

if TYPE_CHECKING:
    from ...stage import PlannedStage

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
        summary = TritonSummary.read(folder)
        target_entry["triton"] = {"repository": f"{folder.parent.parent.name}/{folder.parent.name}/{folder.name}/{REPOSITORY}",
                                  "models": summary.models if summary else {}}


DEFAULTS: dict[str, Any] = {"artifacts": "preferred", "onnxruntime": "native", "dynamic_batching": True,
                            "instances": 1, "version": 1}
BASE = "nvcr.io/nvidia/tritonserver:25.10-pyt-python-py3"
"""Default base of Triton images (package.serve: triton): Triton with its Python backend and PyTorch, which the
Python-backend models (AOTInductor packages, ONNX through infbuild.runtime) import."""


def _check(triton: dict[str, Any], data: dict[str, Any], add: Add) -> None:
    """The served artifacts are ones the recipe builds; the batch size fits the batch dim."""
    backends: list[Any] = data["backends"] if isinstance(data.get("backends"), list) else list(BACKENDS)
    built = [*map(str, backends), *(f"{b}:{v}" for b, vs in obj(data.get("variants")).items() if isinstance(vs, list)
                                    for v in vs)]
    chosen = triton.get("artifacts")
    for index, name in enumerate(chosen if isinstance(chosen, list) else []):
        if isinstance(name, str) and name not in built:
            add(("triton", "artifacts", index), f"'{name}' is not an artifact the recipe builds ({', '.join(built)})")
    size = triton.get("max_batch_size")
    if isinstance(size, int) and size > 0:
        batch = leading_dim(data.get("inputs"), data.get("dims"))
        if batch is None:
            add(("triton", "max_batch_size"), "the inputs have no batch dim (a named dim with min 1 that every input "
                "starts with): use 0")
        elif isinstance(obj(obj(data.get("dims")).get(batch)).get("max"), int) and size > data["dims"][batch]["max"]:
            add(("triton", "max_batch_size"), f"{size} is above dims.{batch}.max ({data['dims'][batch]['max']}) that the "
                "artifacts were built for")


SECTION: Section[TritonOptions] = declare(Section(path=("triton",), schema_file=Path(__file__).with_name("section.schema.json"),
                          defaults=DEFAULTS, optional=True, check=_check))


STAGE = register(TritonStage(
    "triton", 1, "device", "write a Triton Inference Server model repository (config.pbtxt per served artifact)",
    Outputs((SUMMARY,), (f"{REPOSITORY}/*",)),
    fields=lambda r: {"triton": r.triton, "recipe_name": r.name, **io_fields(r), "runtime": r.runtime,
                      "threads": r.bench["threads"]},
    needs=("verify",)))
