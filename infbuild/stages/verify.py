"""verify stage: run every artifact on the reference inputs and compare with eager PyTorch's outputs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError
from ..plan import ARTIFACT_STAGE
from ..recipe import Recipe
from ..worker import FAILED_VERIFY_EXIT
from ..runtime.backends import artifact_device, load_backend, unavailable_reason



def compare(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> dict[str, Any]:
    if actual.shape != expected.shape:
        return {"passed": False, "max_abs_err": float("inf"), "max_rel_err": float("inf"),
                "error": f"shape {list(actual.shape)} != reference {list(expected.shape)}"}
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    diff = np.where(np.isnan(a) & np.isnan(e), 0.0, diff)
    finite = np.isfinite(diff)
    max_abs = float(diff.max()) if diff.size and finite.all() else (float("inf") if diff.size else 0.0)
    rel = diff / np.maximum(np.abs(e), np.finfo(np.float32).tiny)
    max_rel = float(rel.max()) if rel.size and finite.all() else (float("inf") if rel.size else 0.0)
    passed = bool(finite.all() and (diff <= atol + rtol * np.abs(e)).all())
    return {"passed": passed, "max_abs_err": max_abs, "max_rel_err": max_rel}


def run(recipe: Recipe, root: Path, out: Path, upstream: dict[str, Path], device: str) -> int:
    rtol, atol = recipe.verify["rtol"], recipe.verify["atol"]
    meta = json.loads((upstream["reference"] / "reference.json").read_text(encoding="utf-8"))
    dtypes = {i.name: i.dtype for i in recipe.inputs}
    results: dict[str, Any] = {}
    failures = []
    for backend in recipe.backends:
        if ARTIFACT_STAGE[backend] not in upstream:
            results[backend] = {"passed": None, "status": "not buildable here"}
            continue
        folder = upstream[ARTIFACT_STAGE[backend]]
        unavailable = unavailable_reason(backend)
        if unavailable:
            results[backend] = {"passed": None, "status": f"not verifiable here: {unavailable}"}
            print(f"[verify] {recipe.name} {backend}: not verifiable here ({unavailable})", flush=True)
            continue
        entry: dict[str, Any] = {"passed": True, "max_abs_err": 0.0, "max_rel_err": 0.0, "shapes": {}}
        try:
            runner = load_backend(backend, folder, recipe.outputs, dtypes, device=artifact_device(folder, device))
            entry["runner"] = runner.detail
        except ArtifactError as exc:
            entry.update(passed=False, error=str(exc), max_abs_err=float("inf"), max_rel_err=float("inf"))
            failures.append(f"{backend}: {exc}")
            results[backend] = entry
            continue
        for label in meta["shapes"]:
            with np.load(upstream["reference"] / f"{label}.npz") as data:
                inputs = {k[len("input."):]: data[k] for k in data.files if k.startswith("input.")}
                expected = {k[len("output."):]: data[k] for k in data.files if k.startswith("output.")}
            try:
                actual = runner(inputs)
            except Exception as exc:  # noqa: BLE001 - a crash inside a backend is a verification failure
                shape_result = {"passed": False, "max_abs_err": float("inf"), "max_rel_err": float("inf"),
                                "error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
            else:
                per_output = {n: compare(np.asarray(actual[n]), expected[n], rtol, atol) for n in recipe.outputs}
                shape_result = {
                    "passed": all(r["passed"] for r in per_output.values()),
                    "max_abs_err": max(r["max_abs_err"] for r in per_output.values()),
                    "max_rel_err": max(r["max_rel_err"] for r in per_output.values()),
                    "outputs": per_output,
                }
            shape_result["inputs"] = meta["shapes"][label]["inputs"]
            entry["shapes"][label] = shape_result
            entry["max_abs_err"] = max(entry["max_abs_err"], shape_result["max_abs_err"])
            entry["max_rel_err"] = max(entry["max_rel_err"], shape_result["max_rel_err"])
            status = "ok" if shape_result["passed"] else "FAILED"
            print(f"[verify] {recipe.name} {backend} @ {label}: max abs {shape_result['max_abs_err']:.3g}, "
                  f"max rel {shape_result['max_rel_err']:.3g} {status}", flush=True)
            if not shape_result["passed"]:
                entry["passed"] = False
                detail = shape_result.get("error") or (f"max abs err {shape_result['max_abs_err']:.3g}, "
                                                       f"max rel err {shape_result['max_rel_err']:.3g} "
                                                       f"> rtol {rtol:g} / atol {atol:g}")
                shape = ", ".join(f"{k}{v}" for k, v in shape_result["inputs"].items())
                failures.append(f"{backend} at {label} shape ({shape}): {detail}")
        results[backend] = entry
    report = {"backends": list(recipe.backends), "rtol": rtol, "atol": atol, "results": results,
              "failures": failures}
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if failures:
        (out / "failures.txt").write_text("\n".join(failures) + "\n", encoding="utf-8")
        return FAILED_VERIFY_EXIT
    return 0
