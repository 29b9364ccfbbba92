"""The tensorrt backend's runner: a serialized engine run with the TensorRT Python runtime."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import ArtifactError
from ...runtime.backends import to_numpy


class TensorRTRunner:
    """A serialized engine run with the TensorRT Python runtime (enqueueV3), I/O buffers as CUDA tensors.

    Not exercised on the machines this was written on (no GPU, no TensorRT): see README."""

    backend = "tensorrt"

    def __init__(self, folder: Path, outputs: tuple[str, ...], input_dtypes: Mapping[str, str]) -> None:
        import tensorrt as trt
        import torch

        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine((folder / "model.engine").read_bytes())
        if self.engine is None:
            raise ArtifactError(f"TensorRT {trt.__version__} cannot deserialize {folder / 'model.engine'} "
                                "(built by another TensorRT version or for another GPU?)")
        self.context = self.engine.create_execution_context()
        self.trt, self.torch = trt, torch
        self.outputs = outputs
        self.dtypes = {name: getattr(torch, dtype) for name, dtype in input_dtypes.items()}
        self.detail = f"TensorRT {trt.__version__}"

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: to_numpy(t) for name, t in self.prepare(inputs)().items()}

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        torch, trt = self.torch, self.trt
        keep = []
        for name, value in inputs.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value)).to("cuda", self.dtypes[name]).contiguous()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            np_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            out = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, np_dtype)).dtype, device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            results[name] = out
        stream = torch.cuda.current_stream()

        def call() -> dict[str, Any]:
            assert keep is not None  # the closure holds the input buffers alive while TensorRT reads them
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise ArtifactError("TensorRT execute_async_v3 failed")
            stream.synchronize()
            return results
        return call


def load(folder: Path, outputs: tuple[str, ...], input_dtypes: Mapping[str, str], device: str,
         threads: int | None, settings: Mapping[str, Any]) -> TensorRTRunner:
    return TensorRTRunner(folder, outputs, input_dtypes)
