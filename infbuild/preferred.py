"""Which artifact a target's runtime loads (``targets.<t>.preferred`` in the manifest), decided in one place."""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def choose_preferred(verify: Mapping[str, Any], bench: Mapping[str, Any] | None, order: Sequence[str]) -> str | None:
    """The fastest at the primary shape among those that passed verify (never a failed or unverified one, however
    fast); before any bench, the first passed in recipe order. ``verify``: backend -> result ({"passed": ...});
    ``bench``: {"primary_shape": label, "results": backend -> label -> {"p50_ms": ...}}."""
    passed = [b for b in order if (verify.get(b) or {}).get("passed") is True]
    if not passed:
        return None
    results = (bench or {}).get("results") or {}
    primary = (bench or {}).get("primary_shape")
    timed = [b for b in passed if primary in (results.get(b) or {})]
    if timed:
        return min(timed, key=lambda b: results[b][primary]["p50_ms"])
    return passed[0]
