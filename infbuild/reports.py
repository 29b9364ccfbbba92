"""Report files that other parts read: ``verify/report.json`` and ``bench/report.json`` (both indexed in the manifest). Each
has one owner here, with its writer and its reader; nobody else opens them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import jsonio

REPORT = "report.json"


def _read(folder: Path) -> dict[str, Any] | None:
    data = jsonio.read_or_none(folder / REPORT)
    return data if isinstance(data, dict) else None


def _write(folder: Path, data: dict[str, Any]) -> None:
    jsonio.write_atomic(folder / REPORT, data, durable=False)


@dataclass(frozen=True)
class VerifyReport:
    """What verify found: per backend {"passed": True/False/None, "status", per-shape statistics ...}."""

    backends: list[str]  # the recipe's backends, in its order
    rtol: float
    atol: float
    rule: str
    results: dict[str, dict[str, Any]]
    failures: list[str] = field(default_factory=list)

    def write(self, folder: Path) -> None:
        _write(folder, asdict(self))

    @classmethod
    def read(cls, folder: Path) -> VerifyReport | None:
        data = _read(folder)
        if data is None or not isinstance(data.get("results"), dict):
            return None
        return cls(list(data.get("backends") or []), data.get("rtol", 0.0), data.get("atol", 0.0),
                   str(data.get("rule", "")), data["results"], list(data.get("failures") or []))

    def verdict(self, backend: str) -> bool | None:
        """True passed, False failed, None not verified (not buildable or not verifiable here)."""
        result = self.results.get(backend)
        return result.get("passed") if isinstance(result, dict) else None

    def verdicts(self) -> dict[str, bool | None]:
        return {backend: self.verdict(backend) for backend in self.results}

    def passed(self) -> list[str]:
        return [b for b in self.backends if self.verdict(b) is True]


@dataclass(frozen=True)
class BenchReport:
    """Latency per backend and shape label ({"p50_ms", "p90_ms", "p99_ms", "throughput", ...}) and the rest of
    ``bench/report.json`` (settings, setup times, where each backend ran) in ``data``."""

    primary_shape: str | None
    threads: int | None
    results: dict[str, dict[str, dict[str, float]]]
    preferred: str | None
    data: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        _write(folder, {**self.data, "primary_shape": self.primary_shape, "threads": self.threads,
                        "results": self.results, "preferred": self.preferred})

    @classmethod
    def read(cls, folder: Path) -> BenchReport | None:
        data = _read(folder)
        if data is None or not isinstance(data.get("results"), dict):
            return None
        return cls(data.get("primary_shape"), data.get("threads"), data["results"], data.get("preferred"), data)

    def timings(self) -> dict[str, Any]:
        """What the manifest and the preferred choice read: the primary shape and the latency table."""
        out: dict[str, Any] = {
            "primary_shape": self.primary_shape, "threads": self.threads,
            "results": {b: {label: {k: r[k] for k in ("p50_ms", "p50_ci_ms", "p90_ms", "p99_ms", "throughput") if k in r}
                            for label, r in per.items()} for b, per in self.results.items()}}
        if isinstance(self.data.get("setup_s"), dict):
            out["setup_s"] = self.data["setup_s"]  # the preferred choice's last tie-break
        if self.data.get("runtime"):
            out["runtime"] = self.data["runtime"]  # the session settings the timings were taken with
        return out
