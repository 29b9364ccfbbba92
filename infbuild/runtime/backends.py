"""Backend runners: call with a dict of numpy arrays named after the recipe's inputs, get a dict of
numpy arrays named after its outputs. Heavy imports happen only when a backend is loaded."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from ..errors import ArtifactError

# numpy has no bfloat16: such arrays travel as float32 and are cast where they reach torch.
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.float32, "int64": np.int64,
                "int32": np.int32, "bool": np.bool_}


class Runner(Protocol):
    backend: str
    detail: str  # e.g. the execution provider or device actually used

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]: ...


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


class AotiRunner:
    backend = "aoti"

    def __init__(self, folder: Path, outputs: tuple[str, ...], device: str, input_dtypes: Mapping[str, str],
                 threads: int | None) -> None:
        import torch
        import torch._inductor

        if threads:
            torch.set_num_threads(threads)
        if device.startswith("cuda"):
            _preload_onnxruntime()
        try:
            self.model = torch._inductor.aoti_load_package(str(folder / "model.pt2"))
        except Exception as exc:  # noqa: BLE001
            raise ArtifactError(f"cannot load AOTInductor package {folder / 'model.pt2'}: "
                                f"{type(exc).__name__}: {str(exc).strip()[:500]}") from None
        self.torch = torch
        self.device = device
        self.outputs = outputs
        self.dtypes = {name: getattr(torch, dtype) for name, dtype in input_dtypes.items()}
        self.detail = device

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.prepare(inputs)()
        values = [result] if isinstance(result, self.torch.Tensor) else list(result)
        return {name: _numpy(t) for name, t in zip(self.outputs, values)}

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        torch = self.torch
        tensors = {name: torch.from_numpy(np.ascontiguousarray(value)).to(self.device, self.dtypes[name])
                   for name, value in inputs.items()}

        def call() -> Any:
            with torch.inference_mode():
                return self.model(**tensors)
        return call


def _preload_onnxruntime() -> None:
    """Import onnxruntime before a CUDA AOTInductor package is loaded. Seen on an H100 host (torch 2.11+cu130,
    g++ 13.3, Ubuntu 24.04): in a process that had not imported onnxruntime, aoti_load_package crashed
    (SIGSEGV in the package's std::regex, parse_device_str); with onnxruntime imported first it loaded and ran."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass


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
        return {name: _numpy(t) for name, t in self.prepare(inputs)().items()}

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


def _numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def unavailable_reason(backend: str) -> str | None:
    """Why this host cannot run a backend's artifacts (None when it can)."""
    import importlib.util

    if backend == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return "the tensorrt Python package is not installed"
        if importlib.util.find_spec("torch") is None:
            return "torch is needed for TensorRT I/O buffers"
    return None


def artifact_device(folder: Path, default: str) -> str:
    """The device an artifact was built for (aoti.json records it), else ``default``."""
    try:
        return str(json.loads((folder / "aoti.json").read_text(encoding="utf-8"))["device"])
    except (OSError, ValueError, KeyError):
        return default


def load_backend(backend: str, folder: Path, outputs: tuple[str, ...], input_dtypes: Mapping[str, str],
                 device: str = "cpu", threads: int | None = None) -> Runner:
    """Load one built artifact from its stage folder."""
    loaders: dict[str, Callable[[], Runner]] = {
        "onnxruntime": lambda: OnnxRuntimeRunner(folder, outputs, device, threads),
        "aoti": lambda: AotiRunner(folder, outputs, device, input_dtypes, threads),
        "tensorrt": lambda: TensorRTRunner(folder, outputs, input_dtypes),
    }
    if backend not in loaders:
        raise ArtifactError(f"unknown backend '{backend}' (known: {', '.join(loaders)})")
    return loaders[backend]()
