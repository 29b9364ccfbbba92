"""The onnxruntime backend's runner: an ONNX model in an onnxruntime session (CPU, or CUDA first where
onnxruntime-gpu is installed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import ArtifactError


class OnnxRuntimeRunner:
    backend = "onnxruntime"

    def __init__(self, folder: Path, outputs: tuple[str, ...], device: str, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ArtifactError(f"onnxruntime cannot load {folder / 'model.onnx'}: {str(exc).strip()[:500]}") from None
        self.outputs = outputs
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.detail = self.session.get_providers()[0]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.prepare(inputs)()))

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """A zero-argument call on inputs converted once (what `bench` times)."""
        feeds = {name: np.ascontiguousarray(value) for name, value in inputs.items() if name in self.input_types}
        names = list(self.outputs)
        return lambda: self.session.run(names, feeds)


def load(folder: Path, outputs: tuple[str, ...], input_dtypes: Mapping[str, str], device: str,
         threads: int | None) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(folder, outputs, device, threads)
