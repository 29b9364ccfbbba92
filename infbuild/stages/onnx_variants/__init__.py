"""onnxruntime variants of the exported ONNX model, each its own stage (key, folder, verify and bench results):
the offline-optimised graph, transformer fusion, dynamic and static int8 quantization, fp16 (GPU targets).
They reuse the ``onnx`` stage's export; the onnx backend's runner runs them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ...folder import Outputs
from ...recipe import Recipe
from ...section import Section, declare
from ...stage import Placement, Stage, register

if TYPE_CHECKING:
    from ...host import Host


class OnnxVariant(Stage):
    def declined(self, folder: Path) -> str | None:
        """Why onnxruntime's tools could not build this variant of this graph (recorded in variant.json)."""
        try:
            failed = json.loads((folder / "variant.json").read_text(encoding="utf-8")).get("failed")
        except (OSError, ValueError, AttributeError):
            return None
        return str(failed) if failed else None

    def hardware(self, recipe: Recipe, fingerprint: Any, device: str) -> dict[str, Any]:
        """A graph transform (fusion, dynamic int8 quantisation) depends on nothing of the host; an offline-optimised
        graph and a calibrated one on what onnxruntime's kernels do on this CPU (not the compiler)."""
        from ...fingerprint import scope_fields

        if self.variant in ("fused", "int8_dynamic"):
            return {}
        return scope_fields(dict(fingerprint), "cpu-numerics" if device == "cpu" else "gpu")

    def placement(self, recipe: Recipe, host: Host) -> Placement:
        if self.precision == "fp16":  # onnxruntime's CPU provider has few fp16 kernels: a GPU-only variant
            from ...host import NO_GPU

            return Placement("cuda", None if host.cuda_target else NO_GPU)
        return super().placement(recipe, host)


def _fields(variant: str) -> Any:
    def fields(recipe: Recipe) -> dict[str, Any]:
        options: dict[str, Any] = dict(SECTION.of(recipe))
        own = {"optimized": ["optimization_level"], "fused": ["fusion_model_type", "optimization_level"],
               "int8_dynamic": ["per_channel"], "int8_static": ["per_channel", "calibration"], "fp16": []}[variant]
        return {"variant": variant, "options": {k: options[k] for k in own}}
    return fields


class OnnxVariantOptions(TypedDict):
    optimization_level: Literal["basic", "extended", "all"]
    fusion_model_type: str
    per_channel: bool
    calibration: Literal["minmax", "entropy", "percentile"]


SECTION: Section[OnnxVariantOptions] = declare(Section(
    path=("stages", "onnx_variants"), schema_file=Path(__file__).with_name("section.schema.json"),
                           defaults={"optimization_level": "all", "fusion_model_type": "bert", "per_channel": False,
                                     "calibration": "minmax"}))
OUTPUTS = Outputs(("variant.json",), ("model.onnx", "model.onnx.data"))  # no model.onnx: declined (variant.json)
DOCS = {
    "optimized": ("fp32", "the ONNX graph optimised offline by onnxruntime (SessionOptions.optimized_model_filepath)"),
    "fused": ("fp32", "transformer fusion (onnxruntime.transformers.optimizer): attention, layer norm, GELU fused"),
    "int8_dynamic": ("int8", "dynamic int8 quantization (onnxruntime.quantization.quantize_dynamic)"),
    "int8_static": ("int8", "static int8 quantization calibrated on the recipe's reference inputs (quantize_static)"),
    "fp16": ("fp16", "the model in float16 with float32 inputs and outputs (GPU targets)"),
}
for _variant, (_precision, _doc) in DOCS.items():
    register(OnnxVariant(
        f"onnx_{_variant}", 2, "cuda" if _precision == "fp16" else "device", _doc, OUTPUTS,
        tools=("onnx", "onnxruntime", "onnxruntime-gpu"), fields=_fields(_variant),
        needs=("onnx", "reference") if _variant == "int8_static" else ("onnx",),
        backend="onnxruntime", variant=_variant, precision=_precision, module="onnx_variants",
        runner_of="onnx"))
