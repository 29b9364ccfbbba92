"""The aoti backend's runner: an AOTInductor package (model.pt2) loaded with torch._inductor."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import ArtifactError
from ...runtime.backends import to_numpy


class AotiRunner:
    backend = "aoti"

    def __init__(self, folder: Path, outputs: tuple[str, ...], device: str, input_dtypes: Mapping[str, str],
                 threads: int | None) -> None:
        import torch
        import torch._inductor

        if threads:
            torch.set_num_threads(threads)
        _refuse_other_torch(folder, torch.__version__)
        if device.startswith("cuda"):
            _preload_onnxruntime()
        try:
            self.model = torch._inductor.aoti_load_package(str(folder / "model.pt2"))
        except Exception as exc:
            raise ArtifactError(f"cannot load AOTInductor package {folder / 'model.pt2'}: "
                                f"{type(exc).__name__}: {str(exc).strip()[:500]}") from None
        self.torch = torch
        self.device = device
        self.outputs = outputs
        self.dtypes = {name: getattr(torch, dtype) for name, dtype in input_dtypes.items()}
        self.detail = device
        self._direct = _direct_call(self.model, list(input_dtypes))

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, tensors = self.torch, self._tensors(inputs)
        with torch.inference_mode():
            result = self._direct(tensors) if self._direct else self.model(**tensors)
        values = (result,) if isinstance(result, torch.Tensor) else result
        return {name: to_numpy(t) for name, t in zip(self.outputs, values)}

    def _tensors(self, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The inputs as tensors on the package's device: on the CPU without a copy (a cast where dtypes differ)."""
        torch, device, dtypes, tensors = self.torch, self.device, self.dtypes, {}
        for name, value in inputs.items():
            t = torch.from_numpy(value if value.flags.c_contiguous else np.ascontiguousarray(value))
            tensors[name] = t if t.dtype == dtypes[name] and device == "cpu" else t.to(device, dtypes[name])
        return tensors

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        torch, tensors, run = self.torch, self._tensors(inputs), self._direct or (lambda t: self.model(**t))

        def call() -> Any:
            with torch.inference_mode():
                return run(tensors)
        return call


def _direct_call(model: Any, names: list[str]) -> Callable[[dict[str, Any]], Any] | None:
    """The package's call without what ``AOTICompiledModel.__call__`` redoes on every call (it parses the call
    spec's two JSON tree specs and flattens the inputs each time: tens of microseconds on a small model): the
    input order and the output tree worked out once. None where this torch's package loader lacks the pieces
    (then the package's own call is used)."""
    try:
        from torch.export._tree_utils import reorder_kwargs
        from torch.utils import _pytree as pytree

        loader = model.loader
        in_spec, out_spec = (pytree.treespec_loads(spec) for spec in loader.get_call_spec())
        order = pytree.tree_flatten(((), reorder_kwargs({n: n for n in names}, in_spec)))[0]
    except Exception:  # another torch's internals: fall back to the public call
        return None
    if sorted(order) != sorted(names):
        return None
    run, unflatten = loader.boxed_run, pytree.tree_unflatten
    if out_spec.type in (tuple, list) and all(child.is_leaf() for child in out_spec.children()):
        return lambda tensors: run([tensors[name] for name in order])  # the flat outputs are the tuple's items
    return lambda tensors: unflatten(run([tensors[name] for name in order]), out_spec)


def _refuse_other_torch(folder: Path, running: str) -> None:
    """An AOTInductor package runs only with the torch release that compiled it (aoti.json records it): another one
    (a serving image's, an upgraded environment's) is refused with both versions, before anything is loaded."""
    from .info import AotiInfo

    info = AotiInfo.read(folder)
    if info is None:
        return  # the stamp already vouches for aoti.json; an older package without the field is loaded as before
    built = info.torch
    if built.split("+")[0] != running.split("+")[0]:
        raise ArtifactError(f"the AOTInductor package {folder / 'model.pt2'} was compiled with torch {built}; this "
                            f"process has torch {running}: rebuild it with this torch (doit build)")


def _preload_onnxruntime() -> None:
    """Import onnxruntime before a CUDA AOTInductor package is loaded. Seen on an H100 host (torch 2.11+cu130,
    g++ 13.3, Ubuntu 24.04): in a process that had not imported onnxruntime, aoti_load_package crashed
    (SIGSEGV in the package's std::regex, parse_device_str); with onnxruntime imported first it loaded and ran."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass


def load(folder: Path, outputs: tuple[str, ...], input_dtypes: Mapping[str, str], device: str,
         threads: int | None, settings: Mapping[str, Any]) -> AotiRunner:
    return AotiRunner(folder, outputs, device, input_dtypes, threads)
