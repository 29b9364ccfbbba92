"""onnx: export the model to ONNX (the onnxruntime backend's artifact, TensorRT's input)."""
from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from ...folder import Outputs
from ...section import Section, declare
from ...stage import Stage, register
from ..common import export_fields
from .info import INFO


class OnnxOptions(TypedDict):
    opset: int
    external_data: bool
    graph_only: bool


SECTION: Section[OnnxOptions] = declare(Section(path=("stages", "onnx"), schema_file=Path(__file__).with_name("section.schema.json"),
                           defaults={"opset": 18, "external_data": False, "graph_only": False}))

STAGE = register(Stage(  # also planned for the stages that need it (TensorRT)
    "onnx", 4, "portable", "export the model to ONNX (torch.onnx.export, dynamo) with the recipe's named dims",
    Outputs(("model.onnx", INFO), ("model.onnx.data", "model.graph.onnx")),
    tools=("torch", "onnx", "onnxscript"), fields=lambda r: {**export_fields(r), "options": SECTION.of(r)},
    needs=("export",), reads_model=True, backend="onnxruntime"))
