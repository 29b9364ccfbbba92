"""Which artifact a target's runtime loads (``targets.<t>.preferred`` in the manifest), decided in one place.

The fastest verified artifact at the bench's primary shape, but only on a difference the measurements support:
when its p50's 95 % confidence interval overlaps a runner-up's, the two are tied there and the tie is broken by a
stated rule — the geometric mean of the p50 over every benchmarked shape (TIE_WITHIN apart), then accuracy (the
smallest relative L2 error verify measured, where another's is over ACCURACY_WITHIN times it; errors below
EXACT count as exact), then the set-up time (load and first calls), then the recipe's order. ``preference`` says which rule decided.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

TIE_WITHIN = 0.02  # geometric means of the p50 closer than this are tied too
ACCURACY_WITHIN = 1.5  # relative L2 errors closer than this factor are tied
EXACT = 1e-4  # a relative L2 error below this is float32 rounding: every such artifact is as accurate


def _interval(result: Mapping[str, Any]) -> tuple[float, float]:
    ci = result.get("p50_ci_ms")
    p50 = float(result["p50_ms"])
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return float(ci[0]), float(ci[1])
    return p50, p50  # reports from before intervals: every difference counts


def _geomean(results: Mapping[str, Any], backend: str, labels: Sequence[str]) -> float:
    return math.exp(sum(math.log(results[backend][label]["p50_ms"]) for label in labels) / len(labels))


def preference(verify: Mapping[str, Any], bench: Mapping[str, Any] | None, order: Sequence[str]
               ) -> tuple[str | None, str]:
    """(preferred artifact, why). Never a failed or unverified one, however fast; before any bench, the first
    passed in recipe order. ``verify``: backend -> result ({"passed": ...}); ``bench``: {"primary_shape": label,
    "results": backend -> label -> {"p50_ms", "p50_ci_ms"}, "setup_s": backend -> seconds (optional)}."""
    passed = [b for b in order if (verify.get(b) or {}).get("passed") is True]
    if not passed:
        return None, "no artifact passed verify"
    results = (bench or {}).get("results") or {}
    primary = (bench or {}).get("primary_shape")
    timed = sorted((b for b in passed if primary in (results.get(b) or {})),
                   key=lambda b: (results[b][primary]["p50_ms"], order.index(b)))
    if not timed:
        return passed[0], "the first verified artifact in the recipe's order (none was benchmarked)"
    best = timed[0]
    if len(timed) == 1:
        return best, f"the only verified artifact benchmarked at {primary}"
    low, high = _interval(results[best][primary])
    tied = [best] + [b for b in timed[1:] if _interval(results[b][primary])[0] <= high]
    if len(tied) == 1:
        runner_up = timed[1]
        ratio = results[runner_up][primary]["p50_ms"] / results[best][primary]["p50_ms"]
        return best, (f"fastest at {primary}, {ratio:.2f}x faster than {runner_up} (95 % intervals of the p50 "
                      "do not overlap)")
    what = f"tied at {primary} with {', '.join(tied[1:])} (95 % intervals of the p50 overlap)"
    labels = [label for label in results[best] if all(label in results[b] for b in tied)]
    means = {b: _geomean(results, b, labels) for b in tied}
    fastest = min(tied, key=lambda b: (means[b], order.index(b)))
    close = sorted((b for b in tied if means[b] <= means[fastest] * (1 + TIE_WITHIN)), key=order.index)
    if len(close) == 1:
        return fastest, (f"{what}; fastest over all benchmarked shapes ({', '.join(labels)}: geometric mean "
                         f"{means[fastest]:.4g} ms)")
    tail = "and over all shapes"
    errors = {b: (verify.get(b) or {}).get("rel_l2_err") for b in close}
    if all(isinstance(e, (int, float)) for e in errors.values()):
        floor = {b: max(float(e), EXACT) for b, e in errors.items()}  # type: ignore[arg-type]
        least = min(floor.values())
        accurate = [b for b in close if floor[b] <= least * ACCURACY_WITHIN]
        if len(accurate) == 1 < len(close):
            return accurate[0], f"{what} {tail}; the most accurate (rel L2 {errors[accurate[0]]:.3g})"
        if len(accurate) < len(close):
            close, tail = accurate, f"{tail} and in accuracy (rel L2 within {ACCURACY_WITHIN}x of {least:.3g})"
    setup = (bench or {}).get("setup_s") or {}
    if all(isinstance(setup.get(b), (int, float)) for b in close):
        quickest = min(close, key=lambda b: (setup[b], order.index(b)))
        return quickest, f"{what} {tail}; the quickest to set up ({setup[quickest]:.2f} s)"
    return close[0], f"{what} {tail}; the first of them in the recipe's order"


def choose_preferred(verify: Mapping[str, Any], bench: Mapping[str, Any] | None, order: Sequence[str]) -> str | None:
    """The preferred artifact (``preference`` without the reason)."""
    return preference(verify, bench, order)[0]
