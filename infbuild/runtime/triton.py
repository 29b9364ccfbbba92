"""The model Triton's Python backend runs for an infbuild artifact (AOTInductor packages; ONNX with
``triton.onnxruntime: python``). The generated ``model.py`` of each such model imports ``TritonPythonModel`` from
here; the artifact, its stamp and a manifest subset sit in ``<version>/artifacts/``.

At startup it loads the artifact with ``infbuild.runtime.load`` for the target named in config.pbtxt: on a host
of another target the model refuses to load with the message naming both (Triton logs it and the model is not
ready), and a tampered artifact is refused as ``load`` refuses it. Requests are checked against the recipe
(dtypes, dim ranges: Triton's error, not a crash); requests of the same shapes that Triton's dynamic batcher
hands over together run as one batch. Tensors cross the stub by DLPack (through torch): the stub's numpy bridge
is built for numpy 1 and reads numpy 2 arrays as zeros."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InfbuildError
from .load import load
from .model import Model


def _pb() -> Any:
    import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend stub

    return pb_utils


class TritonPythonModel:
    model: Model
    batched: bool

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value") for k, v in (config.get("parameters") or {}).items()}
        root = Path(args["model_repository"]) / args["model_version"] / "artifacts"
        if args.get("model_instance_kind") == "GPU":
            import torch

            torch.cuda.set_device(int(args.get("model_instance_device_id") or 0))
        try:
            self.model = load(root, params["INFBUILD_RECIPE"], target=params["INFBUILD_TARGET"],
                              backend=params["INFBUILD_ARTIFACT"])
        except InfbuildError as exc:
            raise _pb().TritonModelException(f"infbuild: {exc}") from None
        self.batched = int(config.get("max_batch_size") or 0) > 0
        print(f"[infbuild] {config['name']}: {self.model!r} ({self.model.runner.detail})", flush=True)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = _pb()
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            try:
                arrays = self.model.validate({name: _array(pb.get_input_tensor_by_name(request, name))
                                              for name in self.model.inputs})
            except (InfbuildError, ValueError, TypeError) as exc:
                responses[index] = pb.InferenceResponse(error=_bad_request(pb, str(exc)))
                continue
            shape = tuple((n, a.shape[1:] if self.batched else a.shape) for n, a in arrays.items())
            groups.setdefault(shape, []).append((index, arrays))
        for members in groups.values():
            runs = [members] if self.batched else [[m] for m in members]
            for run in runs:
                self._run(pb, run, responses)
        return responses

    def _run(self, pb: Any, members: list[tuple[int, dict[str, np.ndarray]]], responses: list[Any]) -> None:
        """One call of the artifact for requests of one shape (joined along the batch axis), split back."""
        try:
            joined = members[0][1] if len(members) == 1 else {
                n: np.concatenate([arrays[n] for _, arrays in members]) for n in self.model.inputs}
            outputs = self.model.runner(joined)
        except Exception as exc:  # the artifact's own runtime raises its own types: an error answer
            for index, _ in members:
                responses[index] = pb.InferenceResponse(error=pb.TritonError(f"infbuild: {str(exc)[:500]}"))
            return
        if len(members) == 1:
            index, _ = members[0]
            responses[index] = pb.InferenceResponse([_tensor(pb, n, outputs[n]) for n in self.model.outputs])
            return
        start = 0
        for index, arrays in members:
            end = start + next(iter(arrays.values())).shape[0]  # this request's rows of the joined batch
            responses[index] = pb.InferenceResponse([_tensor(pb, n, outputs[n][start:end]) for n in self.model.outputs])
            start = end

    def finalize(self) -> None:
        self.model = None  # type: ignore[assignment]


def _bad_request(pb: Any, message: str) -> Any:
    """A 400 / INVALID_ARGUMENT answer (older Python backends have no error codes: a plain error)."""
    code = getattr(getattr(pb, "TritonError", None), "INVALID_ARG", None)
    return pb.TritonError(message) if code is None else pb.TritonError(message, code)


def _array(tensor: Any) -> np.ndarray:
    if tensor is None:
        raise ValueError("a required input is missing")
    import torch

    try:
        return torch.utils.dlpack.from_dlpack(tensor.to_dlpack()).cpu().numpy()
    except Exception:  # a dtype DLPack cannot carry: the stub's own conversion
        return np.asarray(tensor.as_numpy())


def _tensor(pb: Any, name: str, array: np.ndarray) -> Any:
    import torch

    array = np.ascontiguousarray(array)
    try:
        return pb.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(torch.from_numpy(array)))
    except Exception:  # a dtype DLPack cannot carry
        return pb.Tensor(name, array)
