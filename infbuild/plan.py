"""Plan: recipes + host fingerprint -> the stages to build, where, and whether this host can build them.

Pure and light (no torch): the no-op build runs this and the key checks, nothing more.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Any, Callable

from .artifacts import Outputs, stage_dir
from .fingerprint import cuda_target, tensorrt_info, torch_has_cuda
from .recipe import Recipe


def _model_fields(r: Recipe) -> dict[str, Any]:
    d = r.to_dict()
    return {"model": {k: d["model"][k] for k in ("factory", "kwargs", "dtype")}, "inputs": d["inputs"],
            "dims": d["dims"], "outputs": d["outputs"]}


def _trt_fields(r: Recipe) -> dict[str, Any]:
    options = {k: v for k, v in r.stages["tensorrt"].items() if k not in ("trtexec", "required")}
    return {"inputs": r.to_dict()["inputs"], "dims": r.to_dict()["dims"], "options": options}


@dataclass(frozen=True)
class StageDef:
    """What a stage reads (for its key) and where it lives."""

    name: str
    version: int  # bump when the stage's implementation changes what it produces
    scope: str  # "portable", "device" (the recipe's device target) or "cuda" (the GPU's target)
    tools: tuple[str, ...]
    reads_model: bool  # its key includes the model's sources and weights
    fields: Callable[[Recipe], dict[str, Any]]
    doc: str
    upstream_view: str = "files"  # how upstream stages enter the key: files (key + digests), graph, bench, package
    cacheable: bool = True  # outputs may be shared through caches (not bench timings, not images)
    outputs: Outputs = Outputs(())  # exactly what its folder holds: checked on commit, restore, status, load


STAGES: dict[str, StageDef] = {
    "onnx": StageDef("onnx", 4, "portable", ("torch", "onnx", "onnxscript"), True,
                     lambda r: {**_model_fields(r), "options": r.stages["onnx"]},
                     "export the model to ONNX (torch.onnx.export, dynamo) with the recipe's named dims",
                     outputs=Outputs(("model.onnx", "export.json"), ("model.onnx.data", "model.graph.onnx"))),
    "reference": StageDef("reference", 1, "portable", ("torch",), True,
                          lambda r: {**_model_fields(r), "options": r.stages["reference"]},
                          "capture sample inputs and eager PyTorch outputs at the min/opt/max shapes",
                          outputs=Outputs(("reference.json", "opt.npz"), ("*.npz",))),
    "aoti": StageDef("aoti", 3, "device", ("torch",), True,
                     lambda r: {**_model_fields(r), "options": r.stages["aoti"]},
                     "compile an AOTInductor package (model.pt2) for this target",
                     outputs=Outputs(("model.pt2", "aoti.json"))),
    "trt_timing_cache": StageDef("trt_timing_cache", 1, "cuda", ("trtexec",), False, _trt_fields,
                                 "build a TensorRT timing cache with trtexec for this GPU", upstream_view="graph",
                                 outputs=Outputs(("timing.cache", "build.log"))),
    "trt_engine": StageDef("trt_engine", 1, "cuda", ("trtexec",), False, _trt_fields,
                           "build a TensorRT engine with trtexec (layer info, profile, times, build log)",
                           outputs=Outputs(("model.engine", "layers.json", "profile.json", "times.json", "build.log",
                                            "engine.json"))),
    "bench": StageDef("bench", 3, "device", ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt"), True,
                      lambda r: {"bench": r.bench, "backends": list(r.backends), **_model_fields(r)},
                      "time verified artifacts and eager/torch.compile baselines; pick the fastest (preferred)",
                      upstream_view="bench", outputs=Outputs(("report.json", "report.md", "latency.png"))),
    "package": StageDef("package", 2, "device", ("docker",), False,
                        lambda r: {"package": {k: v for k, v in (r.package or {}).items() if k != "registry"},
                                   "backends": list(r.backends), "inputs": r.to_dict()["inputs"],
                                   "dims": r.to_dict()["dims"], "outputs": list(r.outputs)},
                        "package the target's artifacts into a container image <image>:<version>-<target>",
                        upstream_view="package", cacheable=False,
                        outputs=Outputs(("image.json",), ("Dockerfile", "oci/*"))),
    "verify": StageDef("verify", 2, "device", ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt"), False,
                       lambda r: {"verify": r.verify, "backends": list(r.backends), "outputs": list(r.outputs)},
                       "run every artifact on the reference inputs and compare with eager PyTorch",
                       outputs=Outputs(("report.json", "report.md"), ("failures.txt",))),
}
ARTIFACT_STAGE = {"onnxruntime": "onnx", "aoti": "aoti", "tensorrt": "trt_engine"}  # backend -> its artifact
NO_GPU = "no CUDA GPU on this host (nvidia-smi finds none)"


@dataclass(frozen=True)
class PlannedStage:
    recipe: Recipe
    stage: StageDef
    target: str
    folder: Path
    upstream: tuple[str, ...]
    device: str  # "cpu" or "cuda": where the stage runs
    not_buildable: str | None  # reason this host cannot build it, or None
    tools: dict[str, Any]  # extra tool facts for this recipe (trtexec path and version)

    @property
    def task_name(self) -> str:
        return f"{self.stage.name}:{self.recipe.name}"

    @property
    def required(self) -> bool:
        return self.stage.name.startswith("trt_") and bool(self.recipe.stages["tensorrt"]["required"])


def aoti_placement(recipe: Recipe, fp: dict[str, Any]) -> tuple[str, str | None]:
    """(device, reason-not-buildable) for the recipe's AOTI package on this host."""
    wanted = recipe.stages["aoti"]["device"]
    gpu_target = cuda_target(fp)
    if wanted == "cpu" or (wanted == "auto" and not (gpu_target and torch_has_cuda(fp))):
        return "cpu", None
    if gpu_target is None:
        return "cuda", NO_GPU
    if not torch_has_cuda(fp):
        return "cuda", f"the installed torch ({fp['tools'].get('torch')}) is a CPU build"
    return "cuda", None


def trt_placement(recipe: Recipe, fp: dict[str, Any], root: Path) -> tuple[dict[str, Any], str | None]:
    info = tensorrt_info(recipe.stages["tensorrt"]["trtexec"], root)
    if recipe.stages["tensorrt"]["trtexec"] is None:
        info = fp.get("tensorrt") or info  # the host's (or a simulated host's) trtexec
    if cuda_target(fp) is None:
        return info, NO_GPU
    if not info.get("trtexec"):
        return info, ("trtexec not found (set $TRTEXEC or stages.tensorrt.trtexec, put it on PATH, or install "
                      "TensorRT: /usr/src/tensorrt/bin/trtexec)")
    if not info.get("version"):
        return info, f"cannot read the TensorRT version from {info['trtexec']} (no banner in `trtexec --help`)"
    return info, None


def plan_recipe(recipe: Recipe, fp: dict[str, Any], artifacts: Path, root: Path,
                required: AbstractSet[str] = frozenset()) -> list[PlannedStage]:
    """The recipe's stages in build order. Required stages that cannot be built stay in (and fail)."""
    aoti_device, aoti_reason = aoti_placement(recipe, fp)
    gpu_target = cuda_target(fp) or "cuda-unavailable"
    wants_trt = "tensorrt" in recipe.backends
    trt_info, trt_reason = trt_placement(recipe, fp, root) if wants_trt else ({}, None)
    on_gpu = cuda_target(fp) is not None and (aoti_device == "cuda" or wants_trt)
    device_target = gpu_target if on_gpu else fp["targets"]["cpu"]
    targets = {"portable": "portable", "device": device_target, "cuda": gpu_target}

    order = (["onnx"] if {"onnxruntime", "tensorrt"} & set(recipe.backends) else []) + ["reference"]
    order += ["aoti"] if "aoti" in recipe.backends else []
    order += ["trt_timing_cache", "trt_engine"] if wants_trt else []
    planned: dict[str, PlannedStage] = {}
    tail = ["verify"] + (["bench"] if recipe.bench["enabled"] else []) + (["package"] if recipe.package else [])
    for name in order + tail:
        stage = STAGES[name]
        reason = {"aoti": aoti_reason, "trt_timing_cache": trt_reason, "trt_engine": trt_reason}.get(name)
        upstream: tuple[str, ...] = {"trt_timing_cache": ("onnx",), "trt_engine": ("onnx", "trt_timing_cache")}.get(name, ())
        if name == "verify":
            # Verify what this host can build; an unbuildable required artifact blocks (fails) verify.
            artifacts_here = [ARTIFACT_STAGE[b] for b in recipe.backends]
            upstream = ("reference", *[a for a in artifacts_here
                                       if planned[a].not_buildable is None or is_required(planned[a], required)])
        if name == "bench":
            upstream = ("verify", *planned["verify"].upstream[1:])
        if name == "package":
            upstream = ("verify", *(("bench",) if "bench" in planned else ()), *planned["verify"].upstream[1:])
            reason = package_reason(recipe)
        reason = reason or next((planned[u].not_buildable for u in upstream if planned[u].not_buildable), None)
        device = {"portable": "cpu", "cuda": "cuda"}.get(stage.scope, "cuda" if on_gpu else "cpu")
        if name == "aoti":
            device = aoti_device
        target = targets[stage.scope]
        planned[name] = PlannedStage(recipe, stage, target, stage_dir(artifacts, recipe.name, target, name),
                                     upstream, device, reason,
                                     trt_info if name.startswith("trt_") else {"target": target} if name == "package" else {})
    return list(planned.values())


def package_reason(recipe: Recipe) -> str | None:
    if (recipe.package or {}).get("builder") != "docker":
        return None
    from .package.engine import engine_available

    return engine_available()


def is_required(p: PlannedStage, required: AbstractSet[str]) -> bool:
    return p.required or p.stage.name in required or p.task_name in required


def plan(recipes: list[Recipe], fp: dict[str, Any], artifacts: Path, root: Path,
         required: AbstractSet[str] = frozenset()) -> list[PlannedStage]:
    return [p for r in recipes for p in plan_recipe(r, fp, artifacts, root, required)]
