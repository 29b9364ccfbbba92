"""verify stage: run every artifact on the reference inputs and compare with eager PyTorch's outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ArtifactError
from ...recipe import Recipe
from ...reports import VerifyReport
from ...runtime.backends import load_backend, unavailable_reason
from ...stage import artifacts
from ..reference.layout import Reference
from ..request import Job
from . import budget

RULE = ("every element |actual - reference| <= atol_eff + rtol * |reference|, where atol_eff = min(atol, rtol * "
        "max|reference|): the absolute floor never exceeds the output's own scale, so an all-zero or constant "
        "output cannot pass for a small reference")


def compare(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> dict[str, Any]:
    """Error statistics of one output and its verdict under ``RULE`` (see the report)."""
    if actual.shape != expected.shape:
        return {"passed": False, "max_abs_err": float("inf"), "max_rel_err": float("inf"),
                "error": f"shape {list(actual.shape)} != reference {list(expected.shape)}"}
    a, e = actual.astype(np.float64).ravel(), expected.astype(np.float64).ravel()
    if not e.size:
        return {"passed": True, "max_abs_err": 0.0, "max_rel_err": 0.0, "mean_abs_err": 0.0, "rel_l2_err": 0.0,
                "cosine": 1.0, "ref_max_abs": 0.0, "atol_eff": atol}
    diff = np.where(np.isnan(a) & np.isnan(e), 0.0, np.abs(a - e))
    finite = bool(np.isfinite(diff).all())
    scale = float(np.nanmax(np.abs(e))) if np.isfinite(e).any() else 0.0
    atol_eff = min(atol, rtol * scale)
    stats: dict[str, Any] = {"ref_max_abs": scale, "atol_eff": atol_eff}
    if finite:
        rel = diff / np.maximum(np.abs(e), np.finfo(np.float32).tiny)
        norm_e, norm_a = float(np.linalg.norm(np.nan_to_num(e))), float(np.linalg.norm(np.nan_to_num(a)))
        stats.update(max_abs_err=float(diff.max()), max_rel_err=float(rel.max()), mean_abs_err=float(diff.mean()),
                     rel_l2_err=float(np.linalg.norm(diff) / norm_e) if norm_e else (0.0 if not diff.any() else float("inf")),
                     cosine=float(np.dot(np.nan_to_num(a), np.nan_to_num(e)) / (norm_a * norm_e)) if norm_a and norm_e
                     else float(norm_a == norm_e))
    else:
        stats.update(max_abs_err=float("inf"), max_rel_err=float("inf"), mean_abs_err=float("inf"),
                     rel_l2_err=float("inf"), cosine=float("nan"))
    stats["passed"] = finite and bool((diff <= atol_eff + rtol * np.abs(e)).all())
    if scale == 0.0 and stats["passed"]:
        stats.update(passed=False, error="the reference output is all zeros: no artifact can be told apart from one "
                                         "that computes nothing; give sample inputs that produce a non-zero output")
    return stats


# What a backend says when it has no kernel for the model's dtype on this target (onnxruntime's CPU provider and
# bfloat16, e.g.): the artifact is unsupported here, not wrong.
UNSUPPORTED = ("NOT_IMPLEMENTED", "Could not find an implementation for")


def tolerances(recipe: Recipe, output: str) -> tuple[float, float]:
    """(rtol, atol) for one output: the recipe's, overridden by ``verify.outputs.<name>``."""
    own = (recipe.verify.get("outputs") or {}).get(output) or {}
    return float(own.get("rtol", recipe.verify["rtol"])), float(own.get("atol", recipe.verify["atol"]))


def within_budget(result: dict[str, Any], budget: dict[str, float]) -> dict[str, Any]:
    """One output's verdict under a reduced-precision budget (largest relative L2 error, smallest cosine) instead of
    the elementwise rule: a quantized or half-precision model is close overall, not element by element."""
    if "rel_l2_err" not in result or result.get("error") and "reference output is all zeros" not in result["error"]:
        return result
    passed = bool(np.isfinite(result["rel_l2_err"]) and result["rel_l2_err"] <= budget["rel_l2"]
                  and result["cosine"] >= budget["cosine"])
    return {**result, "passed": passed and result.get("ref_max_abs", 1.0) != 0.0, "budget": budget}


def check_shape(recipe: Recipe, runner: Any, inputs: dict[str, np.ndarray],
                expected: dict[str, np.ndarray], budget: dict[str, float] | None = None) -> dict[str, Any]:
    """Run one reference sample and compare every output (under ``budget`` when given, else the elementwise rule)."""
    try:
        actual = runner(inputs)
    except Exception as exc:  # a crash inside a backend is a verification failure
        return {"passed": False, "max_abs_err": float("inf"), "max_rel_err": float("inf"),
                "error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
    per_output = {n: compare(np.asarray(actual[n]), expected[n], *tolerances(recipe, n)) for n in recipe.outputs}
    if budget is not None:
        per_output = {n: within_budget(r, budget) for n, r in per_output.items()}
    return {"passed": all(r["passed"] for r in per_output.values()),
            "max_abs_err": max(r["max_abs_err"] for r in per_output.values()),
            "max_rel_err": max(r["max_rel_err"] for r in per_output.values()),
            "outputs": per_output}


def _unsupported(message: str) -> bool:
    return any(marker in message for marker in UNSUPPORTED)


def verify_backend(recipe: Recipe, backend: str, folder: Path, device: str, reference: Reference,
                   budget: dict[str, float] | None = None) -> tuple[dict[str, Any], list[str]]:
    """One artifact against every reference sample: (its report entry, its failure lines)."""
    dtypes = {i.name: i.dtype for i in recipe.inputs}
    try:
        runner = load_backend(backend, folder, recipe.outputs, dtypes, device=device,
                              runtime=recipe.runtime)
    except ArtifactError as exc:
        return _load_failure(recipe, backend, exc)
    entry: dict[str, Any] = {"passed": True, "max_abs_err": 0.0, "max_rel_err": 0.0, "shapes": {},
                             "runner": runner.detail}
    failures = []
    for label, shapes in reference.shapes.items():
        result = check_shape(recipe, runner, *reference.sample(label), budget=budget)
        if not result["passed"] and _unsupported(result.get("error", "")):
            return _unsupported_entry(recipe, backend, result["error"]), []
        result["inputs"] = shapes.inputs
        _record(entry, label, result)
        print(f"[verify] {recipe.name} {backend} @ {label}: {_summary(result)}", flush=True)
        if not result["passed"]:
            entry["passed"] = False
            failures.append(_failure_line(backend, label, result))
    return entry, failures


def _load_failure(recipe: Recipe, backend: str, exc: ArtifactError) -> tuple[dict[str, Any], list[str]]:
    """An artifact that would not load: unsupported on this target, or failed."""
    if _unsupported(str(exc)):
        return _unsupported_entry(recipe, backend, str(exc)), []
    return {"passed": False, "error": str(exc), "max_abs_err": float("inf"), "max_rel_err": float("inf")}, \
        [f"{backend}: {exc}"]


def _record(entry: dict[str, Any], label: str, result: dict[str, Any]) -> None:
    """Add one sample's result to the artifact's entry, keeping its worst errors."""
    entry["shapes"][label] = result
    entry["max_abs_err"] = max(entry["max_abs_err"], result["max_abs_err"])
    entry["max_rel_err"] = max(entry["max_rel_err"], result["max_rel_err"])


def _failure_line(backend: str, label: str, result: dict[str, Any]) -> str:
    shape = ", ".join(f"{k}{v}" for k, v in result["inputs"].items())
    return f"{backend} at {label} shape ({shape}): {result.get('error') or _summary(result)}"


def _unsupported_entry(recipe: Recipe, backend: str, message: str) -> dict[str, Any]:
    reason = message.strip().splitlines()[-1][:300]
    print(f"[verify] {recipe.name} {backend}: unsupported on this target ({reason})", flush=True)
    return {"passed": None, "status": f"unsupported on this target: {reason}"}


def _summary(result: dict[str, Any]) -> str:
    """One line per sample: each output's errors against its allowance, and the verdict."""
    if "outputs" not in result:
        return f"FAILED ({result.get('error')})"
    parts = []
    for name, r in result["outputs"].items():
        if "error" in r and "rel_l2_err" not in r:
            parts.append(f"{name}: {r['error']}")
            continue
        allowed = (f"budget rel L2 <= {r['budget']['rel_l2']:g}, cosine >= {r['budget']['cosine']:g}" if "budget" in r
                   else f"allowed {r['atol_eff']:.3g} + rtol*|ref|, |ref| <= {r['ref_max_abs']:.3g}")
        parts.append(f"{name}: max abs {r['max_abs_err']:.3g} ({allowed}), rel L2 {r['rel_l2_err']:.3g}, "
                     f"cosine {r['cosine']:.6f}"
                     + ("" if r["passed"] else " FAILED" + (f": {r['error']}" if r.get("error") else "")))
    return "; ".join(parts) + (" ok" if result["passed"] else "")


def markdown(recipe: Recipe, results: dict[str, Any]) -> str:
    """report.md: the pass rule, then one row per artifact, sample and output."""
    lines = [f"# verify: {recipe.name}", "", f"Pass rule: {RULE}.", "",
             "| artifact | sample | output | rtol | atol_eff | max abs | max rel | mean abs | rel L2 | cosine | passed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for backend, entry in results.items():
        if not entry.get("shapes"):
            lines.append(f"| {backend} | - | - | | | | | | | | {entry.get('status') or entry.get('error') or '-'} |")
            continue
        for label, shape in entry["shapes"].items():
            for name, r in (shape.get("outputs") or {"-": {"passed": False, "error": shape.get("error")}}).items():
                if "rel_l2_err" not in r:
                    lines.append(f"| {backend} | {label} | {name} | | | | | | | | no: {r.get('error')} |")
                    continue
                lines.append(f"| {backend} | {label} | {name} | {tolerances(recipe, name)[0]:g} | {r['atol_eff']:.3g} | "
                             f"{r['max_abs_err']:.3g} | {r['max_rel_err']:.3g} | {r['mean_abs_err']:.3g} | "
                             f"{r['rel_l2_err']:.3g} | {r['cosine']:.6f} | "
                             f"{'yes' if r['passed'] else 'no' + (': ' + r['error'] if r.get('error') else '')} |")
    return "\n".join(lines) + "\n"


def run(job: Job) -> list[str]:
    reference = Reference.read(job.upstream["reference"])
    results: dict[str, Any] = {}
    failures: list[str] = []
    for artifact in job.recipe.artifacts():
        results[artifact], failed = _verify(job, artifact, reference)
        failures += failed
    _write_reports(job.recipe, job.out, results, failures)
    return failures


def _verify(job: Job, backend: str, reference: Reference) -> tuple[dict[str, Any], list[str]]:
    """One artifact's (report entry, failure lines); one that cannot be verified here is recorded as such."""
    stage = artifacts()[backend]
    if stage.name in job.failed:
        why = job.failed[stage.name]
        print(f"[verify] {job.recipe.name} {backend}: FAILED to build ({why[:300]})", flush=True)
        return ({"passed": False, "error": f"failed to build: {why}", "max_abs_err": float("inf"),
                 "max_rel_err": float("inf")}, [f"{backend}: failed to build: {why}"])
    if stage.name not in job.upstream:
        return {"passed": None, "status": "not buildable here"}, []
    declined = stage.declined(job.upstream[stage.name])
    if declined:
        print(f"[verify] {job.recipe.name} {backend}: not built ({declined[:200]})", flush=True)
        return {"passed": None, "status": f"not built: {declined}"}, []
    unavailable = unavailable_reason(backend)
    if unavailable:
        print(f"[verify] {job.recipe.name} {backend}: not verifiable here ({unavailable})", flush=True)
        return {"passed": None, "status": f"not verifiable here: {unavailable}"}, []
    limits = budget(job.recipe, stage.precision) if stage.precision != "fp32" else None
    entry, failures = verify_backend(job.recipe, backend, job.upstream[stage.name], job.device, reference, limits)
    _summarize_errors(entry)
    if stage.variant is None:
        return entry, failures
    return _judge_variant(job.recipe, backend, stage.precision, limits, entry), []


def _summarize_errors(entry: dict[str, Any]) -> None:
    """The artifact's worst relative L2 error and cosine over every output and shape (what budgets bound)."""
    per_output = [o for shape in (entry.get("shapes") or {}).values() for o in (shape.get("outputs") or {}).values()]
    if per_output:
        entry["rel_l2_err"] = max(float(o.get("rel_l2_err", float("inf"))) for o in per_output)
        entry["cosine"] = min(float(o.get("cosine", float("nan"))) for o in per_output)


def _judge_variant(recipe: Recipe, artifact: str, precision: str, budget: dict[str, float] | None,
                   entry: dict[str, Any]) -> dict[str, Any]:
    """A variant within its precision's accuracy budget passes; outside it, it is reported with its error and never
    preferred, but the build does not fail (a variant is an offer, the recipe's own artifacts are the contract)."""
    entry["precision"] = precision
    if budget is not None:
        entry["budget"] = budget
    if entry.get("passed") is None:
        return entry
    if not entry["passed"]:
        why = (f"rel_l2 {entry.get('rel_l2_err', float('inf')):.3g}, cosine {entry.get('cosine', float('nan')):.6f}"
               + (f"; budget rel_l2 <= {budget['rel_l2']:g}, cosine >= {budget['cosine']:g}" if budget
                  else f"; rule rtol {recipe.verify['rtol']:g}, atol {recipe.verify['atol']:g}")
               + (f"; {entry['error']}" if entry.get("error") else ""))
        entry["status"] = f"outside its {precision} budget ({why})"
    print(f"[verify] {recipe.name} {artifact}: {'within' if entry['passed'] else 'OUTSIDE'} its {precision} budget "
          f"(rel_l2 {entry.get('rel_l2_err', float('nan')):.3g}, cosine {entry.get('cosine', float('nan')):.6f})",
          flush=True)
    return entry


def _write_reports(recipe: Recipe, out: Path, results: dict[str, Any], failures: list[str]) -> None:
    """report.json, report.md and, when any artifact failed, failures.txt."""
    VerifyReport(recipe.artifacts(), recipe.verify["rtol"], recipe.verify["atol"], RULE, results, failures).write(out)
    (out / "report.md").write_text(markdown(recipe, results), encoding="utf-8")
    if failures:
        (out / "failures.txt").write_text("\n".join(failures) + "\n", encoding="utf-8")
