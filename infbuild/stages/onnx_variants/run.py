"""Build one onnxruntime variant (one link of a chain) from the model.onnx of the stage before it: the ``onnx``
stage's export or the chain one link shorter (in the worker)."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import StageFailed
from ..request import Job
from . import SECTION, source_stage
from .info import VariantInfo, declined_in

LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _optimized(source: Path, dest: Path, level: str) -> None:
    """The graph onnxruntime would run, saved: what its session optimisations make of it, done once here."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.optimized_model_filepath = str(dest)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _fused(source: Path, dest: Path, model_type: str, level: str) -> dict[str, Any]:
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(str(source), model_type=model_type, num_heads=0, hidden_size=0,
                                     opt_level={"basic": 1, "extended": 2, "all": 99}[level])
    model.save_model_to_file(str(dest))
    return {k: int(v) for k, v in (model.get_fused_operator_statistics() or {}).items() if v}


class NothingToFuse(Exception):
    """A fusion link that would leave the graph as it was (declined: it would duplicate another artifact)."""


def _onnxscript_fused(source: Path, dest: Path) -> dict[str, Any]:
    """onnxscript's fusions for onnxruntime on the dynamo export (what Olive's OnnxScriptFusion pass runs)."""
    from onnxscript import ir
    from onnxscript.rewriter import ort_fusions

    model, counts = ort_fusions.optimize_for_ort(ir.load(str(source)))
    if not any(counts.values()):  # the chain would only repeat the variants of the graph before it
        raise NothingToFuse("onnxscript's rewriter found nothing to fuse in this graph")
    _packed_attention(model)
    external = source.with_name(source.name + ".data").exists()
    ir.save(model, str(dest), external_data=dest.name + ".data" if external else None)
    return {k: int(v) for k, v in counts.items() if v}


def _packed_attention(model: Any) -> None:
    """Leave each fused ``Attention`` in the form onnxruntime's int8 quantizer turns into ``QAttention``: its
    packed Q/K/V weight and bias as initializers (onnxscript leaves them as a ``Concat`` of the three, which the
    quantizer skips, so the attention's matrix products stay fp32) and no ``qkv_hidden_sizes`` where the three
    are equal (the quantizer refuses the attribute; equal sizes are what ``Attention`` assumes without it).
    The fp32 graph computes the same: the folded constants are what onnxruntime would fold at load."""
    from onnxscript import optimizer

    optimizer.fold_constants(model, input_size_limit=1 << 30, output_size_limit=1 << 30)
    optimizer.remove_unused_nodes(model)
    for node in model.graph:
        sizes = node.attributes.get("qkv_hidden_sizes") if node.op_type == "Attention" else None
        if sizes is not None and len(set(sizes.as_ints())) == 1:
            del node.attributes["qkv_hidden_sizes"]


def _loadable(model: Path) -> None:
    """A graph transform's result must load in onnxruntime (a rewrite can leave a graph it refuses: then the
    variant is declined here, with onnxruntime's reason, not failed in verify)."""
    from .calibrate import cpu_session

    cpu_session(model)


def _preprocessed(source: Path, scratch: Path) -> Path:
    """Shape inference and graph clean-up before quantization (onnxruntime's recommended pre-processing)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dest = scratch / "pre.onnx"
    try:
        quant_pre_process(str(source), str(dest), skip_symbolic_shape=False)
    except Exception as exc:  # pre-processing is an optimisation; quantize the model as it is
        print(f"[onnx_variants] pre-processing skipped ({type(exc).__name__}: {str(exc)[:200]})", flush=True)
        return source
    return dest


def _int8(source: Path, dest: Path, scratch: Path, static: bool, job: Job, options: Any) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = _preprocessed(source, scratch)
    if not static:
        embeddings = bool(options["quantize_embeddings"])
        quantize_dynamic(str(prepared), str(dest), weight_type=QuantType.QInt8, per_channel=options["per_channel"],
                         op_types_to_quantize=None if embeddings else _dynamic_ops_without_embeddings())
        return {"weights": "int8", "activations": "dynamic uint8", "embeddings": "int8" if embeddings else "float32"}
    from .calibrate import quantize_static_within

    return quantize_static_within(prepared, dest, scratch, job.recipe, job.upstream["reference"], options)


def _dynamic_ops_without_embeddings() -> list[str]:
    """What quantize_dynamic quantizes, less the embedding lookups (Gather, EmbedLayerNormalization over a constant
    table): int8 makes a lookup no faster, and rounding the table costs accuracy (BERT hidden 128 x 2 layers: the
    relative L2 error of last_hidden_state 0.0089 with them quantized, 0.0012 without; GPT-2 tiny 0.0196, 0.0171)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return sorted(op for op in IntegerOpsRegistry if op not in ("Gather", "EmbedLayerNormalization"))


def _fp16(source: Path, dest: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(dest))


def run(job: Job) -> None:
    variant = job.stage.removeprefix("onnx_")
    link, before = variant.split("+")[-1], source_stage(variant)
    options = SECTION.of(job.recipe)
    source, dest = job.upstream[before] / "model.onnx", job.out / "model.onnx"
    chained = before != "onnx"
    info = VariantInfo(variant, chain=variant.split("+") if chained else None, source=before if chained else None)
    details = info.details
    if not source.is_file():  # the link before could not be built for this graph: neither can the chain
        _declined(job, info, f"its link {before} was declined: {_declined_reason(job.upstream[before])}")
        return
    scratch = job.out / ".scratch"
    scratch.mkdir()
    started = time.perf_counter()
    print(f"[{job.stage}] {job.recipe.name}: building the {link} link of {variant} from {before}'s {source.name}",
          flush=True)
    home = Path.cwd()
    # onnxruntime's tools write scratch files into the working directory (a model-sized <uuid>.data and
    # sym_shape_infer_temp.onnx when pre-processing fails): here, that is the staging folder's scratch, removed below.
    os.chdir(scratch)
    try:
        if link == "optimized":
            _optimized(source, dest, options["optimization_level"])
            details["optimization_level"] = options["optimization_level"]
        elif link == "fused":
            details["fused"] = _fused(source, dest, options["fusion_model_type"], options["optimization_level"])
            details["model_type"] = options["fusion_model_type"]
        elif link == "onnxscript_fused":
            details["fused"] = _onnxscript_fused(source, dest)
        elif link in ("int8_dynamic", "int8_static"):
            details.update(_int8(source, dest, scratch, link == "int8_static", job, options))
        elif link == "fp16":
            _fp16(source, dest)
        else:
            raise StageFailed(f"unknown onnxruntime variant {variant!r}")
        if link in ("fused", "onnxscript_fused"):
            _loadable(dest)
    except StageFailed:
        raise
    except Exception as exc:  # onnxruntime's tools raise their own exception types
        # A variant is an offer: a conversion onnxruntime's tools cannot do for this graph is recorded (verify and
        # bench report it) instead of failing the recipe's build.
        for leftover in (dest, dest.with_name(dest.name + ".data")):
            leftover.unlink(missing_ok=True)
        _declined(job, info, f"{type(exc).__name__}: {str(exc).strip()[:1500]}")
        return
    finally:
        os.chdir(home)
        shutil.rmtree(scratch, ignore_errors=True)
    import onnxruntime

    info = replace(info, onnxruntime=onnxruntime.__version__, bytes=dest.stat().st_size,
                   source_bytes=source.stat().st_size, seconds=round(time.perf_counter() - started, 3))
    info.write(job.out)
    print(f"[{job.stage}] wrote {dest.name}: {info.bytes} bytes ({before}: {info.source_bytes}) in "
          f"{info.seconds:.1f}s", flush=True)


def _declined(job: Job, info: VariantInfo, why: str) -> None:
    print(f"[{job.stage}] {job.recipe.name}: onnxruntime could not build the {info.variant} variant "
          f"({why[:300]}); recorded, the recipe's other artifacts go on", flush=True)
    replace(info, failed=why).write(job.out)


def _declined_reason(folder: Path) -> str:
    return declined_in(folder) or "no model.onnx"
