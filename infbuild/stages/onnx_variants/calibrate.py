"""Static int8 quantization that keeps accuracy: activation ranges calibrated once on the recipe's reference inputs
plus generated batches, then a per-node sensitivity pass leaves in float the nodes whose quantization costs the
most, until the error on held-out batches (against the fp32 graph) is within the target.

Calibration: every reference input (its shapes and the user's samples; only those shaped like opt for the
histogram calibrators) and ``calibration_batches`` generated at the opt shape (seeds ``CALIBRATION_SEED + i``).
Held out: ``HELD_OUT`` batches at opt (seeds ``HELD_OUT_SEED + i``), never calibrated on nor verified with.
Sensitivity: quantized with one node left in float at a time (the ranges are reused: onnxruntime's calibration
cache), the nodes whose exclusion lowers the error most are left in float one by one, at most ``MAX_EXCLUDED`` of
them; the model with the smallest error found is kept and what was done is recorded."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ...recipe import Recipe
from ..reference.layout import sample_inputs_in
from ..samples import sample_inputs

CALIBRATION_SEED = 10_000
HELD_OUT_SEED = 20_000
HELD_OUT = 2
MAX_EXCLUDED = 0.25  # of the candidate nodes
SENSITIVE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "Softmax", "Gather", "LayerNormalization")


def _shapes(sample: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {name: value.shape for name, value in sample.items()}


class Calibration:
    """Calibration inputs as onnxruntime's data reader."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.samples = samples
        self.feeds: Iterator[dict[str, np.ndarray]] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)

    def rewind(self) -> None:
        self.feeds = iter(self.samples)


def _opt_batches(recipe: Recipe, names: list[str], seed: int, count: int) -> list[dict[str, np.ndarray]]:
    shapes = {i.name: i.concrete(recipe.dims, "opt") for i in recipe.inputs}
    return [{n: a for n, a in sample_inputs(recipe, shapes, seed + i).items() if n in names} for i in range(count)]


def calibration_samples(recipe: Recipe, reference: Path, names: list[str], same_shapes: bool,
                        generated: int) -> tuple[list[dict[str, np.ndarray]], int]:
    """(the samples, how many of them come from the reference stage). ``same_shapes``: only samples shaped like
    the opt one (histogram calibrators stack their outputs)."""
    samples: list[dict[str, np.ndarray]] = []
    for feed in sample_inputs_in(reference):
        sample = {name: feed[name] for name in names if name in feed}
        if same_shapes and samples and _shapes(sample) != _shapes(samples[0]):
            continue
        samples.append(sample)
    from_reference = len(samples)
    return samples + _opt_batches(recipe, names, CALIBRATION_SEED, generated), from_reference


class HeldOut:
    """Held-out batches and the fp32 graph's outputs for them: the error of a quantized graph is the worst relative
    L2 error of any output on any batch (what verify's budget measures, on inputs it never sees)."""

    def __init__(self, recipe: Recipe, fp32: Path, names: list[str]) -> None:
        self.batches = _opt_batches(recipe, names, HELD_OUT_SEED, HELD_OUT)
        session = cpu_session(fp32)
        self.want = [session.run(None, batch) for batch in self.batches]

    def error(self, model: Path) -> float:
        session = cpu_session(model)
        worst = 0.0
        for batch, want in zip(self.batches, self.want):
            for got, ref in zip(session.run(None, batch), want):
                norm = float(np.linalg.norm(ref.astype(np.float64)))
                diff = float(np.linalg.norm(got.astype(np.float64) - ref))
                worst = max(worst, diff / norm if norm else diff)
        return worst


def cpu_session(model: Path) -> Any:
    """An onnxruntime CPU session, quiet (it raises when the graph is one onnxruntime refuses)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def quantize_static_within(prepared: Path, dest: Path, scratch: Path, recipe: Recipe, reference: Path,
                           options: Mapping[str, Any]) -> dict[str, Any]:
    """Static QDQ int8 of ``prepared`` into ``dest``; returns what variant.json records."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibration, target = options["calibration"], options["static_error_target"]
    names = [i.name for i in cpu_session(prepared).get_inputs()]
    samples, from_reference = calibration_samples(recipe, reference, names, calibration != "minmax",
                                                  int(options["calibration_batches"]))
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration]
    ranges = scratch / "ranges.json"  # calibrated once, reused by every quantization below

    def quantize(excluded: list[str], path: Path) -> float:
        quantize_static(str(prepared), str(path), None if ranges.is_file() else Calibration(samples),
                        quant_format=QuantFormat.QDQ, per_channel=options["per_channel"],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                        nodes_to_exclude=excluded, calibration_cache_path=str(ranges))
        return held_out.error(path)

    held_out = HeldOut(recipe, prepared, names)
    error = first = quantize([], dest)
    info: dict[str, Any] = {"weights": "int8", "activations": "uint8", "calibration": calibration,
                            "samples": len(samples), "reference_samples": from_reference,
                            "generated_samples": len(samples) - from_reference, "held_out_batches": HELD_OUT,
                            "error_target": target, "error_all_quantized": first, "excluded": []}
    if target is not None and first > target:
        candidates = [n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node
                      if n.op_type in SENSITIVE_OPS and n.name]
        probe = scratch / "probe.onnx"
        alone = {name: quantize([name], probe) for name in candidates}  # the error with that node left in float
        order = sorted((n for n in candidates if alone[n] < first), key=lambda n: alone[n])
        excluded: list[str] = []
        best = (first, list(excluded))
        for name in order[:max(1, int(len(candidates) * MAX_EXCLUDED))]:
            excluded.append(name)
            error = quantize(excluded, probe)
            if error < best[0]:
                best = (error, list(excluded))
                probe.replace(dest)
                data = probe.with_name(probe.name + ".data")
                if data.exists():
                    data.replace(dest.with_name(dest.name + ".data"))
            if error <= target:
                break
        error, info["excluded"] = best
        info["sensitivity"] = {"candidates": len(candidates), "error_with_one_in_float": {
            n: round(e, 6) for n, e in sorted(alone.items(), key=lambda item: item[1])[:10]}}
    info["error"] = error
    print(f"[onnx_variants] int8_static: {len(samples)} calibration samples ({from_reference} reference), held-out "
          f"rel L2 {first:.3g} all quantized" + (f", {error:.3g} with {len(info['excluded'])} node(s) in float"
                                                  if info["excluded"] else ""), flush=True)
    return info
