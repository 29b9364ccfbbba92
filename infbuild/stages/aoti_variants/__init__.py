"""AOTInductor variants: the model compiled to compute in bfloat16 or float16 (float32 in and out), where the
target has the instructions for it (CPU: AVX-512 BF16 / AMX, AVX-512 FP16; any CUDA GPU). By default under
``torch.autocast`` (matrix products in the reduced precision, normalisations, softmax and the residual stream in
float32: on BERT small 0.001 max abs error against 0.029 for the whole model cast, at the same speed); ``mode:
cast`` casts the whole model (``stages.aoti_variants``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, TypedDict

from ...folder import Outputs
from ...recipe import Recipe
from ...section import Section, declare
from ...stage import Placement, register
from ..aoti import SECTION as AOTI
from ..aoti import AotiStage
from ..aoti.info import INFO
from ..common import export_fields

if TYPE_CHECKING:
    from ...host import Host

CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


class AotiVariant(AotiStage):
    def placement(self, recipe: Recipe, host: Host) -> Placement:
        place = super().placement(recipe, host)
        if place.device == "cpu" and not set(CPU_FLAGS[self.precision]) & set(host.fingerprint["cpu"].get("flags") or ()):
            return Placement("cpu", f"this CPU has no {self.precision} instructions ({' or '.join(CPU_FLAGS[self.precision])})")
        return place


class AotiVariantOptions(TypedDict):
    mode: Literal["autocast", "cast"]


SECTION: Section[AotiVariantOptions] = declare(Section(
    path=("stages", "aoti_variants"), schema_file=Path(__file__).with_name("section.schema.json"),
    defaults={"mode": "autocast"}))


def _fields(precision: str) -> Callable[[Recipe], dict[str, Any]]:
    return lambda r: {**export_fields(r), "options": AOTI.of(r), "variant": precision, "mode": SECTION.of(r)["mode"]}


for _precision in ("bf16", "fp16"):
    register(AotiVariant(
        f"aoti_{_precision}", 2, "device", f"compile an AOTInductor package computing in {_precision} (fp32 in and out)",
        Outputs(("model.pt2", INFO)), tools=("torch",),
        fields=_fields(_precision),
        needs=("export",), reads_model=True, backend="aoti", variant=_precision, precision=_precision, module="aoti_variants",
        runner_of="aoti"))
