"""One model's ``config.pbtxt`` as data: platform or backend, inputs and outputs (Triton data types, ``-1`` for
dynamic dims, the batch dim left out when Triton batches), ``max_batch_size`` and the dynamic batcher, instance
groups (KIND_GPU on CUDA targets, KIND_CPU otherwise), and per-platform settings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .pbtxt import Enum

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
                "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8",
                "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
"""numpy / recipe dtype -> Triton data type."""

ONNX_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
              11: "float64", 16: "bfloat16"}
"""ONNX TensorProto element type -> dtype name."""

NATIVE_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
"""Backends whose artifacts Triton runs itself; every other artifact is served by the Python backend."""

ORT_ACCELERATORS = {"TensorrtExecutionProvider": ("gpu", "tensorrt"), "OpenVINOExecutionProvider": ("cpu", "openvino")}
"""onnxruntime execution providers that Triton's ONNX Runtime backend names as execution accelerators."""


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # a key of TRITON_TYPES
    shape: tuple[int, ...]  # full shape, -1 where dynamic (the batch axis included)

    def entry(self, batched: bool) -> dict[str, Any]:
        dims = list(self.shape[1:] if batched else self.shape)
        return {"name": self.name, "data_type": Enum(TRITON_TYPES[self.dtype]), "dims": dims or [1]}


@dataclass(frozen=True)
class Batching:
    """Triton's batching for a model: ``max_batch_size`` (0: none) and the dynamic batcher's settings."""

    max_batch_size: int = 0
    dynamic: Mapping[str, Any] | None = None  # None: no dynamic batcher
    why_not: str | None = None  # why the model does not batch, when it does not

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_batch_size": self.max_batch_size}
        if self.max_batch_size and self.dynamic is not None:
            out["dynamic_batching"] = dict(self.dynamic)
        return out


@dataclass
class ModelConfig:
    name: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    batching: Batching
    gpu: bool
    instances: int
    platform: str | None = None  # onnxruntime_onnx, tensorrt_plan
    backend: str | None = None  # python
    default_model_filename: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # platform-specific fields (optimization, cc_model_filenames)

    def to_message(self) -> dict[str, Any]:
        batched = self.batching.max_batch_size > 0
        message: dict[str, Any] = {"name": self.name}
        if self.platform:
            message["platform"] = self.platform
        if self.backend:
            message["backend"] = self.backend
        message.update(self.batching.fields())
        if self.default_model_filename:
            message["default_model_filename"] = self.default_model_filename
        message["input"] = [t.entry(batched) for t in self.inputs]
        message["output"] = [t.entry(batched) for t in self.outputs]
        message["instance_group"] = [{"count": self.instances, "kind": Enum("KIND_GPU" if self.gpu else "KIND_CPU")}]
        message.update(self.extra)
        if self.parameters:
            message["parameters"] = [{"key": k, "value": {"string_value": v}} for k, v in self.parameters.items()]
        return message


def batching(options: Mapping[str, Any], batch: Any, reference_batches: list[tuple[int, dict[str, tuple[int, ...]]]]
             ) -> Batching:
    """Batch over the recipe's batch dim (``batch``: a Dim or None) when every output starts with it at every
    reference shape; ``triton.max_batch_size`` caps it (0: off), ``triton.dynamic_batching`` sets the batcher."""
    wanted = options.get("max_batch_size")
    if wanted == 0:
        return Batching(why_not="triton.max_batch_size is 0")
    if batch is None:
        return Batching(why_not="the inputs share no batch dim (a named dim with min 1 at axis 0 of every input)")
    for size, shapes in reference_batches:
        wrong = [name for name, shape in shapes.items() if not shape or shape[0] != size]
        if wrong:
            return Batching(why_not=f"output(s) {', '.join(wrong)} do not start with the batch dim {batch.name}")
    dynamic = options.get("dynamic_batching", True)
    settings = None if dynamic is False else ({} if dynamic is True else dict(dynamic))
    return Batching(int(wanted or batch.max), settings)


def onnxruntime_settings(runtime: Mapping[str, Any], threads: int | None, gpu: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """The ONNX Runtime backend's parameters and ``optimization`` for the session settings bench measured with
    (``runtime.onnxruntime``: threads, execution providers)."""
    parameters: dict[str, str] = {}
    intra = runtime.get("intra_op_threads") or threads
    if intra:
        parameters["intra_op_thread_count"] = str(intra)
        parameters["inter_op_thread_count"] = str(runtime.get("inter_op_threads") or 1)
    elif runtime.get("inter_op_threads"):
        parameters["inter_op_thread_count"] = str(runtime["inter_op_threads"])
    accelerators: dict[str, list[dict[str, str]]] = {}
    for provider in runtime.get("execution_providers") or ():
        kind, name = ORT_ACCELERATORS.get(provider, (None, None))
        if kind and name and (kind == "cpu" or gpu):
            accelerators.setdefault(f"{kind}_execution_accelerator", []).append({"name": name})
    return parameters, ({"optimization": {"execution_accelerators": accelerators}} if accelerators else {})
