"""aoti: an AOTInductor package (model.pt2) compiled for this target's CPU or GPU."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ...folder import Outputs
from ...recipe import Recipe
from ...section import Section, declare
from ...stage import Placement, Stage, register
from ..common import export_fields
from .info import INFO, AotiInfo

if TYPE_CHECKING:
    from ...host import Host


class AotiStage(Stage):
    def artifact_device(self, folder: Path, default: str) -> str:
        """aoti.json records the device the package was compiled for."""
        info = AotiInfo.read(folder)
        return info.device if info else default

    def placement(self, recipe: Recipe, host: Host) -> Placement:
        from ...host import NO_GPU

        wanted = SECTION.of(recipe)["device"]
        if wanted == "cpu" or (wanted == "auto" and not (host.cuda_target and host.torch_has_cuda)):
            return Placement("cpu")
        if host.cuda_target is None:
            return Placement("cuda", NO_GPU)
        if not host.torch_has_cuda:
            return Placement("cuda", f"the installed torch ({host.tool('torch')}) is a CPU build")
        return Placement("cuda")


class AotiOptions(TypedDict):
    device: Literal["auto", "cpu", "cuda"]
    max_autotune: bool
    inductor_configs: dict[str, Any]


SECTION: Section[AotiOptions] = declare(Section(path=("stages", "aoti"), schema_file=Path(__file__).with_name("section.schema.json"),
                           defaults={"device": "auto", "max_autotune": False, "inductor_configs": {}}))

STAGE = register(AotiStage(
    "aoti", 3, "device", "compile an AOTInductor package (model.pt2) for this target",
    Outputs(("model.pt2", INFO)), tools=("torch",),
    fields=lambda r: {**export_fields(r), "options": SECTION.of(r)}, needs=("export",), reads_model=True, backend="aoti"))
