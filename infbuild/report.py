"""What people compare: per recipe and target, the preferred artifact, its latency at the bench's primary shape (with
its 95 % interval), why it was preferred, and how many artifacts passed verify — read from the stamps (the
manifest's view), no torch, no target folder name to know."""
from __future__ import annotations

from dataclasses import KW_ONLY, asdict, dataclass
from pathlib import Path
from typing import Any

from .manifest import build_manifest


@dataclass(frozen=True)
class Row:
    recipe: str
    target: str
    preferred: str | None
    _: KW_ONLY
    p50_ms: float | None  # the preferred artifact's at the primary shape (None: not benchmarked)
    p50_ci_ms: list[float] | None
    shape: str | None  # the primary shape's label
    eager_ms: float | None  # eager PyTorch at that shape, where it was timed
    verified: str  # "passed of checked"
    reason: str


def rows(artifacts: Path, names: set[str]) -> list[Row]:
    manifest = build_manifest(artifacts, names)
    out = []
    for recipe, entry in sorted(manifest["recipes"].items()):
        for target, t in sorted(entry["targets"].items()):
            if "verify" not in t:
                continue  # the portable folder: no artifact runs from there
            verdicts = [v.get("passed") for v in t["verify"].values()]
            bench = t.get("bench") or {}
            shape, results = bench.get("primary_shape"), bench.get("results") or {}
            timed = (results.get(t.get("preferred") or "") or {}).get(shape or "") or {}
            eager = (results.get("eager") or {}).get(shape or "") or {}
            out.append(Row(recipe, target, t.get("preferred"), p50_ms=timed.get("p50_ms"), p50_ci_ms=timed.get("p50_ci_ms"),
                           shape=shape, eager_ms=eager.get("p50_ms"),
                           verified=f"{sum(v is True for v in verdicts)} of {len(verdicts)}",
                           reason=t.get("preferred_reason", "")))
    return out


def render(found: list[Row]) -> str:
    if not found:
        return "nothing built yet: `doit build` first"
    lines = ["| recipe | target | preferred | p50 ms (95 % interval) | shape | x eager | verified | why |",
             "|---|---|---|---:|---|---:|---|---|"]
    for r in found:
        latency = "-" if r.p50_ms is None else f"{r.p50_ms:.4g}" + (
            f" ({r.p50_ci_ms[0]:.4g}–{r.p50_ci_ms[1]:.4g})" if r.p50_ci_ms else "")
        speedup = f"{r.eager_ms / r.p50_ms:.2f}" if r.eager_ms and r.p50_ms else "-"
        lines.append(f"| {r.recipe} | {r.target} | {r.preferred or 'none'} | {latency} | {r.shape or '-'} | {speedup} | "
                     f"{r.verified} | {r.reason} |")
    return "\n".join(lines)


def as_json(found: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in found]
