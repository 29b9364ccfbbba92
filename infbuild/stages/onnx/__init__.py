"""onnx: export the model to ONNX (the onnxruntime backend's artifact, TensorRT's input)."""
from __future__ import annotations

from ...folder import Outputs
from ...stage import Stage, register
from ..common import export_fields

STAGE = register(Stage(  # also planned for the stages that need it (TensorRT)
    "onnx", 4, "portable", "export the model to ONNX (torch.onnx.export, dynamo) with the recipe's named dims",
    Outputs(("model.onnx", "export.json"), ("model.onnx.data", "model.graph.onnx")),
    tools=("torch", "onnx", "onnxscript"), fields=lambda r: {**export_fields(r), "options": r.stages["onnx"]},
    needs=("export",), reads_model=True, backend="onnxruntime"))
