"""onnx stage: torch.onnx.export (dynamo) with the recipe's named dims as ONNX dim names."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ...errors import StageFailed
from ..model import build_model, check_dynamic_axes, dynamic_shapes, saved_program, specialised_dim, to_torch, trace_shapes
from ..request import Job
from ..samples import sample_inputs
from . import SECTION
from .info import ExportInfo


def _without_weights(proto: Any) -> Any:
    """A copy of the graph with initializers that keep name/shape/dtype but lose their data (for Netron, and to key
    the TensorRT timing cache on structure only); copied in memory, not parsed again from the file."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for init in model.graph.initializer:
        for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "external_data"):
            init.ClearField(name)
        init.data_location = onnx.TensorProto.DEFAULT
    return model


_TRACE_FILE = re.compile(r'File "([^"]+)"')


def portable_path(path: str, root: Path) -> str:
    """A source path as it may appear in a portable artifact: relative to site-packages (wherever the environment
    lives: a ``.venv`` inside the project too, as the README's set-up makes it), else to the project."""
    absolute = os.path.abspath(path)
    for marker in ("site-packages", "dist-packages"):
        if f"{os.sep}{marker}{os.sep}" in absolute:
            return f"<{marker}>/" + absolute.rsplit(f"{os.sep}{marker}{os.sep}", 1)[1]
    if absolute.startswith(str(root) + os.sep):
        return os.path.relpath(absolute, root)
    return os.path.basename(absolute)


def strip_checkout_paths(proto: Any, root: Path) -> bool:
    """Make the exporter's per-node stack traces independent of where the project and Python live, so the
    ONNX file (and every key downstream of it) is the same in every checkout. Returns whether it changed."""
    changed = False

    def graphs(graph: Any) -> Any:
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from graphs(sub)

    nodes = [n for g in graphs(proto.graph) for n in g.node] + [n for f in proto.functions for n in f.node]
    for node in nodes:
        for prop in node.metadata_props:
            if "stack_trace" in prop.key:
                value = _TRACE_FILE.sub(lambda m: f'File "{portable_path(m.group(1), root)}"', prop.value)
                if value != prop.value:
                    prop.value, changed = value, True
    return changed


PROTOBUF_LIMIT = 2 << 30  # ONNX files are protobufs: above 2 GiB, the weights can only be external data


def external_data(requested: bool, out: Path) -> tuple[bool, str | None]:
    """Whether the export wrote its weights as external data (``model.onnx.data``), and a note when that is not what
    the recipe asked: torch writes them so anyway above the protobuf limit, and export.json says what was written."""
    data = out / "model.onnx.data"
    written = data.exists()
    if written and not requested:
        return True, (f"the weights ({data.stat().st_size / 1e9:.2f} GB) exceed ONNX's 2 GiB protobuf limit, so they "
                      "were written as external data (model.onnx.data), as they must be, although "
                      "stages.onnx.external_data is false")
    if requested and not written:
        return False, "stages.onnx.external_data is true but the exporter kept the weights inside model.onnx"
    return written, None


def run(job: Job) -> None:
    recipe, root, out = job.recipe, job.root, job.out
    import onnx

    options = SECTION.of(recipe)
    # The export stage's program when there is one (the model is not built and exported again); by itself, the model
    program = saved_program(job.upstream)
    model = program if program is not None else build_model(recipe, root)
    example = to_torch(recipe, sample_inputs(recipe, trace_shapes(recipe), seed=0))
    path = out / "model.onnx"
    print(f"[onnx] exporting {recipe.name} (opset {options['opset']}, dims: {', '.join(recipe.dims) or 'static'})",
          flush=True)
    started = time.perf_counter()
    # The exporter logs "torchvision is not installed. Skipping torchvision::nms" (and three more) on every export
    # of a model that never uses torchvision: noise for every newcomer, nothing to act on.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (), str(path), kwargs=example, dynamo=True, dynamic_shapes=dynamic_shapes(recipe),
                input_names=[i.name for i in recipe.inputs], output_names=list(recipe.outputs),
                opset_version=options["opset"], external_data=options["external_data"], verbose=False,
            )
    except Exception as exc:  # exporter failures come in many types
        raise specialised_dim(recipe, str(exc)) or \
            StageFailed(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).strip()[:2000]}") from None
    proto = onnx.load(str(path), load_external_data=False)
    check_dynamic_axes(recipe, {v.name: [d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                                         for d in v.type.tensor_type.shape.dim] for v in proto.graph.input}, "ONNX export")
    if strip_checkout_paths(proto, root.resolve()):
        onnx.save(proto, str(path))  # external data references are kept as they are
    onnx.checker.check_model(str(path))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != options["opset"]:
        print(f"[onnx] note: requested opset {options['opset']}, the exporter wrote opset {opset}", flush=True)

    def dims_of(value: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    external, note = external_data(options["external_data"], out)
    if note:
        print(f"[onnx] note: {note}", flush=True)
    graph = _without_weights(proto)
    ExportInfo(opset_requested=options["opset"], opset=opset, external_data=external,
               external_data_requested=options["external_data"],
               inputs={v.name: dims_of(v) for v in proto.graph.input},
               outputs={v.name: dims_of(v) for v in proto.graph.output},
               nodes=len(proto.graph.node), initializers=len(proto.graph.initializer),
               torch=torch.__version__, onnx=onnx.__version__,
               graph_sha256=hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()).write(out)
    if options["graph_only"]:
        onnx.save(graph, str(out / "model.graph.onnx"))
    print(f"[onnx] wrote {path.name} ({path.stat().st_size} bytes, opset {opset}, {len(proto.graph.node)} nodes) "
          f"in {time.perf_counter() - started:.1f}s", flush=True)
