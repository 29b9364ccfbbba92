"""bench: time the verified artifacts (and eager/torch.compile baselines) and pick the fastest (preferred)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...folder import Outputs
from ...options import BenchOptions
from ...recipe import Recipe
from ...reports import REPORT, BenchReport, VerifyReport
from ...section import Add, Section, declare, obj
from ...stage import Stage, UpstreamMissing, register
from ...stamp import Stamp
from ..common import model_fields
from ..verify import variant_fields, verified_artifacts

if TYPE_CHECKING:
    from ...stage import PlannedStage


class BenchStage(Stage):
    def wanted(self, recipe: Recipe) -> bool:
        return bool(recipe.bench["enabled"])

    def upstream(self, recipe: Recipe, planned: Mapping[str, PlannedStage], required: Callable[[PlannedStage], bool]
                 ) -> tuple[str, ...]:
        return ("export", "verify", *verified_artifacts(planned))

    def upstream_view(self, recipe: Recipe, upstream: Mapping[str, tuple[Path, Stamp]]) -> dict[str, Any]:
        """The artifacts' files, and which of them passed verify (not its tolerances)."""
        view = super().upstream_view(recipe, {n: u for n, u in upstream.items() if n != "verify"})
        report = VerifyReport.read(upstream["verify"][0])
        if report is None:
            raise UpstreamMissing("verify (no readable report.json)")
        return {**view, "verify": {"passed": report.verdicts()}}

    def index(self, folder: Path, stamp: Stamp, recipe_entry: dict[str, Any], target_entry: dict[str, Any]) -> None:
        report = BenchReport.read(folder)
        target_entry["bench"] = report.timings() if report else {"primary_shape": None, "threads": None, "results": {}}


DEFAULTS: dict[str, Any] = {
    "shapes": ["min", "opt", "max"], "primary": "opt", "warmup": 10, "iterations": 50, "max_seconds": 1.0, "rounds": 3,
    "threads": 1, "baselines": ["eager"], "torch_compile_mode": "default", "enabled": True,
}


def _shapes(bench: dict[str, Any]) -> list[Any]:
    shapes = bench.get("shapes", DEFAULTS["shapes"])
    return shapes if isinstance(shapes, list) else []


def _labels(bench: dict[str, Any]) -> list[str]:
    """The bench shapes' labels: a name ("opt") as it is, an object of dim sizes as dim=size,... (as Recipe.bench_shapes)."""
    return [entry if isinstance(entry, str) else ",".join(f"{k}={v}" for k, v in entry.items())
            for entry in _shapes(bench) if isinstance(entry, (str, dict))]


def _check(bench: dict[str, Any], data: dict[str, Any], add: Add) -> None:
    """Every dim a bench shape sets is declared, and its size lies within the dim's range; primary is a bench shape."""
    dims = obj(data.get("dims"))
    for index, entry in enumerate(_shapes(bench)):
        if not isinstance(entry, dict):
            continue
        for dim_name, size in entry.items():
            spec = obj(dims.get(dim_name))
            if dim_name not in dims:
                add(("bench", "shapes", index, dim_name), f"'{dim_name}' is not a declared dim")
            elif isinstance(size, int) and isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int) \
                    and not spec["min"] <= size <= spec["max"]:
                add(("bench", "shapes", index, dim_name), f"{size} is outside {dim_name}'s range {spec['min']}..{spec['max']}")
    primary = bench.get("primary", "opt")
    labels = _labels(bench)
    if isinstance(primary, str) and labels and primary not in labels:
        add(("bench", "primary"), f"'{primary}' is not one of the bench shapes ({', '.join(labels)})")


SECTION: Section[BenchOptions] = declare(Section(path=("bench",), schema_file=Path(__file__).with_name("section.schema.json"),
                          defaults=DEFAULTS, check=_check))


STAGE = register(BenchStage(
    "bench", 4, "device", "time verified artifacts and eager/torch.compile baselines; pick the fastest (preferred)",
    Outputs((REPORT, "report.md", "latency.png", "pareto.png")),
    tools=("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt"),
    fields=lambda r: {"bench": r.bench, "backends": list(r.backends), **model_fields(r), **variant_fields(r)},
    needs=("export", "verify"),
    tolerates_failed=True,
    reads_model=True))
