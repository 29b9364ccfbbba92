"""verify: run every artifact built here on the reference inputs and compare with eager PyTorch."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ... import stage as registry
from ...folder import Outputs
from ...options import VerifyOptions
from ...recipe import Recipe
from ...reports import REPORT, VerifyReport
from ...section import Section, declare
from ...stage import Stage, register
from ...stamp import Stamp
from ..common import io_fields

if TYPE_CHECKING:
    from ...stage import PlannedStage


DEFAULT_BUDGETS: dict[str, dict[str, float]] = {  # by precision; see budget()
    "fp16": {"rel_l2": 1e-2, "cosine": 0.9995},
    "bf16": {"rel_l2": 3e-2, "cosine": 0.999},
    "int8": {"rel_l2": 0.1, "cosine": 0.99},
}


def budget(recipe: Recipe, precision: str) -> dict[str, float]:
    """The accuracy budget of a reduced-precision variant against the fp32 eager reference: the largest relative L2
    error and the smallest cosine similarity of any output at any verified shape (``verify.budgets.<precision>`` over
    the defaults). fp32 variants (an optimised or fused graph) keep the recipe's elementwise rtol/atol rule."""
    budgets: dict[str, Any] = dict(recipe.verify.get("budgets") or {})
    own: dict[str, float] = dict(budgets.get(precision) or {})
    return {**DEFAULT_BUDGETS.get(precision, {}), **own}


def variant_fields(recipe: Recipe) -> dict[str, Any]:
    """The variants and their budgets, and the runtime settings, for the stages that judge or time every artifact
    (absent from the keys of recipes without them, which stay as they were)."""
    fields: dict[str, Any] = {"runtime": recipe.runtime} if recipe.runtime else {}
    if not recipe.variants:
        return fields
    return {**fields, "variants": {b: list(v) for b, v in recipe.variants.items()},
            "budgets": {p: budget(recipe, p) for p in ("fp16", "bf16", "int8")}}


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


DEFAULT_TOLERANCES = {  # by model dtype: |actual - reference| <= atol + rtol * |reference| elementwise
    "float32": {"rtol": 1e-3, "atol": 1e-4},
    "float16": {"rtol": 1e-2, "atol": 1e-3},
    "bfloat16": {"rtol": 5e-2, "atol": 1e-2},
}


def _tolerances(given: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The model dtype's tolerances under the recipe's own."""
    return {**DEFAULT_TOLERANCES[data["model"].get("dtype", "float32")], **given}


SECTION: Section[VerifyOptions] = declare(Section(path=("verify",), schema_file=Path(__file__).with_name("section.schema.json"),
                          complete=_tolerances))


STAGE = register(VerifyStage(
    "verify", 2, "device", "run every artifact on the reference inputs and compare with eager PyTorch",
    Outputs((REPORT, "report.md"), ("failures.txt",)),
    tools=("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt"),
    fields=lambda r: {"verify": r.verify, "backends": list(r.backends), "outputs": io_fields(r)["outputs"],
                      **variant_fields(r)},
    tolerates_failed=True, needs=("reference",), judges=True))
