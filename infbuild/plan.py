"""Plan: recipes + host fingerprint -> the stages to build, where, and whether this host can build them.

Pure and light (no torch): the no-op build runs this and the key checks, nothing more.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .artifacts import stage_dir
from .fingerprint import cuda_target, torch_has_cuda
from .recipe import Recipe


def _model_fields(r: Recipe) -> dict[str, Any]:
    d = r.to_dict()
    return {"model": {k: d["model"][k] for k in ("factory", "kwargs", "dtype")}, "inputs": d["inputs"],
            "dims": d["dims"], "outputs": d["outputs"]}


@dataclass(frozen=True)
class StageDef:
    """What a stage reads (for its key) and where it lives."""

    name: str
    version: int  # bump when the stage's implementation changes what it produces
    scope: str  # "portable" or "device" (the recipe's device target: cpu-… or cuda-…)
    tools: tuple[str, ...]
    reads_model: bool  # its key includes the model's sources and weights
    fields: Callable[[Recipe], dict[str, Any]]
    doc: str


STAGES: dict[str, StageDef] = {
    "onnx": StageDef("onnx", 1, "portable", ("torch", "onnx", "onnxscript"), True,
                     lambda r: {**_model_fields(r), "options": r.stages["onnx"]},
                     "export the model to ONNX (torch.onnx.export, dynamo) with the recipe's named dims"),
    "reference": StageDef("reference", 1, "portable", ("torch",), True,
                          lambda r: {**_model_fields(r), "options": r.stages["reference"]},
                          "capture sample inputs and eager PyTorch outputs at the min/opt/max shapes"),
    "aoti": StageDef("aoti", 1, "device", ("torch",), True,
                     lambda r: {**_model_fields(r), "options": r.stages["aoti"]},
                     "compile an AOTInductor package (model.pt2) for this target"),
    "verify": StageDef("verify", 1, "device", ("torch", "onnxruntime", "onnxruntime-gpu"), False,
                       lambda r: {"verify": r.verify, "backends": list(r.backends), "outputs": list(r.outputs)},
                       "run every artifact on the reference inputs and compare with eager PyTorch"),
}
ARTIFACT_STAGE = {"onnxruntime": "onnx", "aoti": "aoti"}  # backend -> the stage that builds its artifact


@dataclass(frozen=True)
class PlannedStage:
    recipe: Recipe
    stage: StageDef
    target: str
    folder: Path
    upstream: tuple[str, ...]
    device: str  # "cpu" or "cuda": where the stage runs
    not_buildable: str | None  # reason this host cannot build it, or None

    @property
    def task_name(self) -> str:
        return f"{self.stage.name}:{self.recipe.name}"


def device_target(recipe: Recipe, fp: dict[str, Any]) -> tuple[str, str, str | None]:
    """(target, device, reason-not-buildable) for the recipe's device-scoped stages on this host."""
    wanted = recipe.stages["aoti"]["device"]
    gpu_target = cuda_target(fp)
    if wanted == "cpu" or (wanted == "auto" and not (gpu_target and torch_has_cuda(fp))):
        return fp["targets"]["cpu"], "cpu", None
    if gpu_target is None:
        return "cuda-unavailable", "cuda", "no CUDA GPU on this host (nvidia-smi finds none)"
    if not torch_has_cuda(fp):
        return gpu_target, "cuda", f"the installed torch ({fp['tools'].get('torch')}) is a CPU build"
    return gpu_target, "cuda", None


def plan_recipe(recipe: Recipe, fp: dict[str, Any], artifacts: Path) -> list[PlannedStage]:
    target, device, reason = device_target(recipe, fp)
    artifact_stages = [ARTIFACT_STAGE[b] for b in recipe.backends]
    order = ["onnx"] if "onnx" in artifact_stages else []
    order += ["reference"] + (["aoti"] if "aoti" in artifact_stages else []) + ["verify"]
    planned: dict[str, PlannedStage] = {}
    for name in order:
        stage = STAGES[name]
        stage_target = "portable" if stage.scope == "portable" else target
        upstream: tuple[str, ...] = ()
        if name == "verify":
            upstream = ("reference", *artifact_stages)
        blocked = None if stage.scope == "portable" else reason
        blocked = blocked or next((planned[u].not_buildable for u in upstream if planned[u].not_buildable), None)
        planned[name] = PlannedStage(recipe, stage, stage_target, stage_dir(artifacts, recipe.name, stage_target, name),
                                     upstream, "cpu" if stage.scope == "portable" else device, blocked)
    return list(planned.values())


def plan(recipes: list[Recipe], fp: dict[str, Any], artifacts: Path) -> list[PlannedStage]:
    return [p for r in recipes for p in plan_recipe(r, fp, artifacts)]
