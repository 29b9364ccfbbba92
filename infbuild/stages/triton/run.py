"""triton stage: the target's model repository (``repository/<model>/config.pbtxt``, ``<model>/<version>/…``) and
``triton.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...package import contents
from ...runtime.backends import NUMPY_DTYPES
from ...stamp import read_stamp
from ...triton.config import Batching, ModelConfig, Tensor, batching, onnxruntime_settings
from ...triton.repository import (
    PYTHON_MODEL,
    Engine,
    Served,
    compute_capability,
    fleet_engines,
    input_tensors,
    model_names,
    onnx_io,
    pick_engines,
    python_parameters,
    require,
    served_by,
    tensorrt_model,
    write,
)
from ..reference.layout import Reference
from ..request import Job
from . import REPOSITORY
from .summary import TritonSummary


def run(job: Job) -> None:
    recipe, out, upstream, target = job.recipe, job.out, job.upstream, job.target
    assert recipe.triton is not None
    options, data = recipe.triton, recipe.to_dict()
    chosen = contents.selection(data, upstream, include=options["artifacts"])
    require(chosen, recipe.name, target)
    reference = Reference.read(upstream["reference"])
    outputs = output_tensors(reference, recipe.outputs)
    batch = batching(options, recipe.batch_dim(), reference_batches(recipe, reference))
    names = model_names(options.get("name") or recipe.name, list(chosen["artifacts"]), chosen["preferred"])
    models = [_model(job, names[artifact], artifact, art, chosen, outputs, batch)
              for artifact, art in chosen["artifacts"].items()]
    write(out / REPOSITORY, models)
    TritonSummary(chosen["preferred"], target, options["version"], {m.name: m.summary() for m in models}).write(out)
    for model in models:
        print(f"[triton] {recipe.name}: model {model.name} serves {model.artifact} ({model.platform}, "
              f"max_batch_size {model.config.batching.max_batch_size})", flush=True)


def _model(job: Job, name: str, artifact: str, art: dict[str, Any], chosen: dict[str, Any], outputs: list[Tensor],
           batch: Batching) -> Served:
    """The model serving one artifact: natively where Triton has a backend for it, else in the Python backend."""
    assert job.recipe.triton is not None
    platform = served_by(artifact, job.recipe.triton["onnxruntime"])
    if platform == "onnxruntime_onnx":
        return _onnx(job, name, artifact, art, outputs, batch)
    if platform == "tensorrt_plan":
        return _engines(job, name, artifact, art, outputs, batch)
    return _python(job, name, artifact, art, chosen, outputs, batch)


def _onnx(job: Job, name: str, artifact: str, art: dict[str, Any], outputs: list[Tensor], batch: Batching) -> Served:
    """An ``onnxruntime_onnx`` model: the graph's own I/O, the session settings bench measured with."""
    recipe, folder = job.recipe, job.upstream[art["stage"]]
    assert recipe.triton is not None
    graph_in, graph_out = onnx_io(folder / "model.onnx")
    settings = recipe.runtime.get("onnxruntime", {})
    gpu = job.target.startswith("cuda-")
    parameters, extra = onnxruntime_settings(settings, (contents.bench_settings(job.upstream) or {}).get("threads"), gpu)
    on_gpu = gpu and not set(settings.get("execution_providers") or ["CUDAExecutionProvider"]) <= {"CPUExecutionProvider"}
    config = ModelConfig(name, input_tensors(recipe, graph_in.__getitem__, list(graph_in)),
                         [Tensor(t.name, graph_out.get(t.name, t.dtype), t.shape) for t in outputs], batch, on_gpu,
                         recipe.triton["instances"], platform="onnxruntime_onnx", default_model_filename="model.onnx",
                         parameters=parameters, extra=extra)
    version = str(recipe.triton["version"])
    files: dict[str, Path | bytes] = {f"{version}/{f}": folder / f for f in art["files"] if f in ("model.onnx", "model.onnx.data")}
    return Served(name, artifact, "onnxruntime_onnx", config, files)


def _python(job: Job, name: str, artifact: str, art: dict[str, Any], chosen: dict[str, Any], outputs: list[Tensor],
            batch: Batching) -> Served:
    """A Python-backend model: the generated model.py and an artifacts folder holding just this artifact."""
    recipe, target, upstream = job.recipe, job.target, job.upstream
    assert recipe.triton is not None
    version = str(recipe.triton["version"])
    runtime_dtype = {i.name: str(np.dtype(NUMPY_DTYPES[i.dtype])) for i in recipe.inputs}
    verified = read_stamp(upstream["verify"])
    only = {**chosen, "artifacts": {artifact: art}, "verify": {artifact: True}}
    data = recipe.to_dict()
    io = {"inputs": data["inputs"], "dims": data["dims"], "outputs": list(recipe.outputs)}
    tree = contents.artifact_tree(data, target, upstream, only, io,
                                  verified.fingerprint if verified else {}, contents.bench_settings(upstream))
    files = {f"{version}/model.py": PYTHON_MODEL.format(artifact=artifact, recipe=recipe.name, target=target).encode(),
             **{f"{version}/artifacts/{k}": v for k, v in tree.items()}}
    config = ModelConfig(name, input_tensors(recipe, runtime_dtype.__getitem__), outputs, batch, target.startswith("cuda-"),
                         recipe.triton["instances"], backend="python",
                         parameters=python_parameters(recipe.name, target, artifact, recipe.triton.get("python_env")))
    return Served(name, artifact, "python", config, files)


def _engines(job: Job, name: str, artifact: str, art: dict[str, Any], outputs: list[Tensor], batch: Batching) -> Served:
    """One tensorrt_plan model holding every GPU target's verified engine, chosen by compute capability."""
    recipe, target = job.recipe, job.target
    assert recipe.triton is not None
    folder = job.upstream[art["stage"]]
    stamp = read_stamp(folder)
    cc = compute_capability(stamp, target) if stamp else None
    own = Engine(target, cc, folder, stamp.key) if stamp and cc else None
    engines, skipped = pick_engines(own, fleet_engines(folder.parent.parent, art["stage"], artifact))
    for line in skipped:
        print(f"[triton] {recipe.name}: left out {line}", flush=True)
    inputs = input_tensors(recipe, {i.name: i.dtype for i in recipe.inputs}.__getitem__)
    return tensorrt_model(name, artifact, engines, own=cc, inputs=inputs, outputs=outputs, batch=batch,
                          instances=recipe.triton["instances"], version=str(recipe.triton["version"]))


def output_tensors(reference: Reference, outputs: tuple[str, ...]) -> list[Tensor]:
    """Outputs' dtypes (from the opt sample) and shapes, -1 where they differ between the reference samples."""
    dtypes = reference.output_dtypes(outputs)
    tensors = []
    for name in outputs:
        shapes = [tuple(entry.outputs[name]) for entry in reference.shapes.values()]
        rank = len(shapes[0])
        dims = tuple(shapes[0][axis] if all(len(s) == rank and s[axis] == shapes[0][axis] for s in shapes) else -1
                     for axis in range(rank))
        tensors.append(Tensor(name, dtypes[name], dims))
    return tensors


def reference_batches(recipe: Any, reference: Reference) -> list[tuple[int, dict[str, tuple[int, ...]]]]:
    """(batch size, output shapes) at each reference sample (to check that the outputs batch)."""
    first = recipe.inputs[0].name
    return [(entry.inputs[first][0], {n: tuple(s) for n, s in entry.outputs.items()})
            for entry in reference.shapes.values() if entry.inputs.get(first)]
