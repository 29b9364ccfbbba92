"""The onnxruntime backend's runner: an ONNX model in an onnxruntime session (CPU, or CUDA first where
onnxruntime-gpu is installed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import ArtifactError


class OnnxRuntimeRunner:
    backend = "onnxruntime"

    def __init__(self, folder: Path, outputs: tuple[str, ...], device: str, threads: int | None,
                 settings: Mapping[str, Any] | None = None) -> None:
        import onnxruntime as ort

        settings = settings or {}
        options = ort.SessionOptions()
        intra = settings.get("intra_op_threads") or threads
        if intra:
            options.intra_op_num_threads = int(intra)
            options.inter_op_num_threads = int(settings.get("inter_op_threads") or 1)
        elif settings.get("inter_op_threads"):
            options.inter_op_num_threads = int(settings["inter_op_threads"])
        options.log_severity_level = 3
        wanted = list(settings.get("execution_providers")
                      or (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]))
        available = set(ort.get_available_providers())
        providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"onnxruntime cannot load {folder / 'model.onnx'}: {str(exc).strip()[:500]}") from None
        self.outputs = outputs
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.detail = self.session.get_providers()[0]
        self._names = list(outputs)
        self._feeds = self.input_types.keys()
        self._run = _session_call(self.session)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # onnxruntime takes numpy arrays as they are (a strided one is copied by its binding); a graph that dropped
        # an input the model ignores is fed the others
        if type(inputs) is not dict or inputs.keys() != self._feeds:
            inputs = {name: value for name, value in inputs.items() if name in self._feeds}
        return dict(zip(self.outputs, self._run(self._names, inputs, None)))

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """A zero-argument call on inputs converted once (what `bench` times): the same session call as a loaded
        model's."""
        feeds = {name: np.ascontiguousarray(value) for name, value in inputs.items() if name in self.input_types}
        names, run = list(self.outputs), self._run
        return lambda: run(names, feeds, None)


def _session_call(session: Any) -> Callable[[list[str], Mapping[str, np.ndarray], Any], list[np.ndarray]]:
    """``InferenceSession.run`` without its Python checks where they check nothing for us: on the CPU provider
    alone, with numpy feeds whose names the caller has checked, the binding's own ``run`` is what it ends in (its
    wrapper adds a graph-capture check for WebGPU, a missing-input check, an OrtValue ownership check and a
    provider fallback: about 7 µs a call, 2 % of a GPT-2 tiny). Other providers, or a binding without ``_sess``,
    get the public call."""
    binding: Any = getattr(session, "_sess", None)
    run: Callable[[list[str], Mapping[str, np.ndarray], Any], list[np.ndarray]] = session.run
    if session.get_providers() == ["CPUExecutionProvider"] and callable(getattr(binding, "run", None)):
        run = binding.run
    return run


def load(folder: Path, outputs: tuple[str, ...], input_dtypes: Mapping[str, str], device: str,
         threads: int | None, settings: Mapping[str, Any]) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(folder, outputs, device, threads, settings)
