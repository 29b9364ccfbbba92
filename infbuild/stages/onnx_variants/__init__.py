"""onnxruntime variants of the exported ONNX model, each its own stage (key, folder, verify and bench results):
the offline-optimised graph, transformer fusion (onnxruntime's and onnxscript's), dynamic and static int8
quantization, fp16 (GPU targets), and chains of them (``onnxscript_fused+int8_dynamic``): each link a stage of its
own, reading the model.onnx of the chain one link shorter, so chains share the links they have in common. They
reuse the ``onnx`` stage's export; the onnx backend's runner runs them."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ...folder import Outputs
from ...recipe import Recipe
from ...section import Section, declare
from ...stage import Placement, Stage, register
from .info import INFO, declined_in

if TYPE_CHECKING:
    from ...host import Host


class OnnxVariant(Stage):
    @property
    def links(self) -> tuple[str, ...]:
        """The transforms it applies in order (a chain ``fused+int8_dynamic``: two; a plain variant: one)."""
        return tuple(str(self.variant).split("+"))

    def declined(self, folder: Path) -> str | None:
        """Why onnxruntime's tools could not build this variant of this graph (recorded in variant.json)."""
        return declined_in(folder)

    def hardware(self, recipe: Recipe, fingerprint: Any, device: str) -> dict[str, Any]:
        """A graph transform (fusion, dynamic int8 quantisation) depends on nothing of the host; an offline-optimised
        graph and a calibrated one on what onnxruntime's kernels do on this CPU (not the compiler). A chain's last link
        decides: the links before it are its upstream stages, whose keys hold what they depend on."""
        from ...fingerprint import scope_fields

        if self.links[-1] in PORTABLE:
            return {}
        return scope_fields(dict(fingerprint), "cpu-numerics" if device == "cpu" else "gpu")

    def placement(self, recipe: Recipe, host: Host) -> Placement:
        if self.precision == "fp16":  # onnxruntime's CPU provider has few fp16 kernels: a GPU-only variant
            from ...host import NO_GPU

            return Placement("cuda", None if host.cuda_target else NO_GPU)
        return super().placement(recipe, host)


OWN_OPTIONS = {"optimized": ["optimization_level"], "fused": ["fusion_model_type", "optimization_level"],
               "onnxscript_fused": [], "int8_dynamic": ["per_channel", "quantize_embeddings"],
               "int8_static": ["per_channel", "calibration", "calibration_batches", "static_error_target"], "fp16": []}
PORTABLE = ("fused", "onnxscript_fused", "int8_dynamic")  # links whose output depends on nothing of the host


def _fields(variant: str) -> Any:
    """Its key's recipe fields: the variant and the options of its (last) link; a chain's earlier links are its
    upstream stages, so their options reach its key through their outputs (changing one rebuilds it and what follows)."""
    link = variant.split("+")[-1]

    def fields(recipe: Recipe) -> dict[str, Any]:
        options: dict[str, Any] = dict(SECTION.of(recipe))
        return {"variant": variant, "options": {k: options[k] for k in OWN_OPTIONS[link]}}
    return fields


class OnnxVariantOptions(TypedDict):
    optimization_level: Literal["basic", "extended", "all"]
    fusion_model_type: str
    per_channel: bool
    quantize_embeddings: bool
    calibration: Literal["minmax", "entropy", "percentile"]
    calibration_batches: int
    static_error_target: float | None
    int8_after: list[str]


def _more_variants(options: dict[str, Any], variants: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Each int8 variant the recipe asks for is also tried after the graph transforms ``int8_after`` names (a chain
    each: ``fused+int8_dynamic``); bench prefers the fastest within budget."""
    asked = variants.get("onnxruntime", ())
    more = [f"{before}+{v}" for v in asked if v in ("int8_dynamic", "int8_static") for before in options["int8_after"]]
    return {**variants, "onnxruntime": tuple(dict.fromkeys([*asked, *more]))} if more else variants


SECTION: Section[OnnxVariantOptions] = declare(Section(
    path=("stages", "onnx_variants"), schema_file=Path(__file__).with_name("section.schema.json"),
    defaults={"optimization_level": "all", "fusion_model_type": "bert", "per_channel": False,
              "quantize_embeddings": False, "calibration": "minmax", "calibration_batches": 8, "static_error_target": 0.02,
              "int8_after": ["onnxscript_fused"]},
    more_variants=_more_variants))
OUTPUTS = Outputs((INFO,), ("model.onnx", "model.onnx.data"))  # no model.onnx: declined (variant.json)
DOCS = {
    "optimized": ("fp32", "the ONNX graph optimised offline by onnxruntime (SessionOptions.optimized_model_filepath)"),
    "fused": ("fp32", "transformer fusion (onnxruntime.transformers.optimizer): attention, layer norm, GELU fused"),
    "onnxscript_fused": ("fp32", "onnxscript's rewriter for onnxruntime (ort_fusions.optimize_for_ort): attention, "
                                 "multi-head attention, skip layer norm and GELU fused on the dynamo export"),
    "int8_dynamic": ("int8", "dynamic int8 quantization (onnxruntime.quantization.quantize_dynamic)"),
    "int8_static": ("int8", "static int8 quantization calibrated on the recipe's reference inputs (quantize_static)"),
    "fp16": ("fp16", "the model in float16 with float32 inputs and outputs (GPU targets)"),
}
GRAPH = ("onnxscript_fused", "fused", "optimized")  # graph transforms, in the order a chain applies them
NUMERIC = ("int8_dynamic", "int8_static", "fp16")  # a chain ends with at most one of these


def chains() -> list[tuple[str, ...]]:
    """Every variant: one link, or a chain of graph transforms (onnxscript's fusion before onnxruntime's fused or
    optimized graph, not both of those) and then at most one numeric link. Shortest first: a chain's stage needs
    the chain one link shorter, registered before it."""
    singles = [("optimized",), ("fused",), ("int8_dynamic",), ("int8_static",), ("fp16",), ("onnxscript_fused",)]
    graphs = [("onnxscript_fused",), ("fused",), ("optimized",), ("onnxscript_fused", "fused"),
              ("onnxscript_fused", "optimized")]
    longer = [("onnxscript_fused", "fused"), ("onnxscript_fused", "optimized"), *((*g, n) for g in graphs for n in NUMERIC)]
    return singles + sorted(longer, key=len)


def _stage_of(links: tuple[str, ...]) -> str:
    return "onnx_" + "+".join(links) if links else "onnx"


def source_stage(variant: str) -> str:
    """The stage whose model.onnx a variant transforms: the onnx stage's export, or its chain one link shorter."""
    return _stage_of(tuple(variant.split("+"))[:-1])


for _links in chains():
    _variant, _last = "+".join(_links), _links[-1]
    _precision = next((DOCS[link][0] for link in _links if link in NUMERIC), "fp32")
    _doc = DOCS[_last][1] if len(_links) == 1 else f"{_last} of the {source_stage(_variant)} stage's graph: " \
        + DOCS[_last][1]
    register(OnnxVariant(
        _stage_of(_links), 3 if _last == "onnxscript_fused" else 2, "cuda" if _precision == "fp16" else "device", _doc, OUTPUTS,
        tools=("onnx", "onnxruntime", "onnxruntime-gpu", *(("onnxscript",) if _last == "onnxscript_fused" else ())),
        fields=_fields(_variant),
        needs=(source_stage(_variant), "reference") if _last == "int8_static" else (source_stage(_variant),),
        backend="onnxruntime", variant=_variant, precision=_precision, module="onnx_variants",
        runner_of="onnx"))
