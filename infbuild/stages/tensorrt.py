"""What the two TensorRT stages share: their key fields, where they can run, and whether the recipe requires them."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from ..fingerprint import tensorrt_info
from ..recipe import Recipe
from ..section import Section, declare
from ..stage import Placement, Stage

if TYPE_CHECKING:
    from ..host import Host


class TensorrtOptions(TypedDict):
    builder_optimization_level: int | None
    workspace_mib: int | None
    hardware_compatibility_level: str
    version_compatible: bool
    sparsity: str
    precision: list[str]
    strongly_typed: bool
    extra_args: list[str]
    trtexec: str | None
    required: bool


SECTION: Section[TensorrtOptions] = declare(Section(
    path=("stages", "tensorrt"), schema_file=Path(__file__).with_name("tensorrt.schema.json"),
    defaults={"builder_optimization_level": None, "workspace_mib": None, "hardware_compatibility_level": "none",
              "version_compatible": False, "sparsity": "disable", "precision": [], "strongly_typed": False,
              "extra_args": [], "trtexec": None, "required": False}))


def trt_fields(recipe: Recipe) -> dict[str, Any]:
    options = {k: v for k, v in SECTION.of(recipe).items() if k not in ("trtexec", "required")}
    return {"inputs": recipe.to_dict()["inputs"], "dims": recipe.to_dict()["dims"], "options": options}


class TensorrtStage(Stage):
    """A stage trtexec runs on this GPU (its version enters the key through ``tools``)."""

    def hardware(self, recipe: Recipe, fingerprint: Any, device: str) -> dict[str, Any]:
        """An engine depends on the GPU, not the host's CPU: the GPU model and compute capability (or only its
        compatibility class for hardware-compatible engines), the CUDA version and the driver's major version."""
        from ..fingerprint import scope_fields

        view = scope_fields(dict(fingerprint), "gpu")
        level = SECTION.of(recipe)["hardware_compatibility_level"]
        if level == "ampere+":  # runs on any Ampere or later GPU
            return {**{k: v for k, v in view.items() if k not in ("gpu", "compute_capability")}, "compatibility": level}
        if level == "sameComputeCapability":  # runs on any GPU of this compute capability
            return {k: v for k, v in view.items() if k != "gpu"}
        return view

    def tool_versions(self, recipe: Recipe, versions: Any) -> dict[str, Any]:
        """A version-compatible engine runs on later TensorRT releases of its major version: keyed on that major."""
        if SECTION.of(recipe)["version_compatible"] and versions.get("trtexec"):
            return {**versions, "trtexec": str(versions["trtexec"]).split(".", 1)[0]}
        return dict(versions)

    def required(self, recipe: Recipe) -> bool:
        return bool(SECTION.of(recipe)["required"])

    def placement(self, recipe: Recipe, host: Host) -> Placement:
        from ..host import NO_GPU

        explicit = SECTION.of(recipe)["trtexec"]
        info = tensorrt_info(explicit, host.root)
        if explicit is None:
            info = host.fingerprint.get("tensorrt") or info  # the host's (or a simulated host's) trtexec
        if host.cuda_target is None:
            return Placement("cuda", NO_GPU, info)
        if not info.get("trtexec"):
            return Placement("cuda", "trtexec not found (set $TRTEXEC or stages.tensorrt.trtexec, put it on PATH, or "
                                     "install TensorRT: /usr/src/tensorrt/bin/trtexec)", info)
        if not info.get("version"):
            return Placement("cuda", f"cannot read the TensorRT version from {info['trtexec']} (no banner in "
                                     "`trtexec --help`)", info)
        return Placement("cuda", None, info)
