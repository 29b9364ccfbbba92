"""Shared by the benchmark scripts: throwaway copies of this project with chosen recipes."""
from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def example_project(dest: Path, recipes: list[Path] | None = None, bench: bool = True) -> Path:
    """A project at ``dest`` with dodo.py, examples/ and the given recipes (default: the repo's examples)."""
    (dest / "recipes").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", dest / "dodo.py")
    shutil.copytree(REPO / "examples", dest / "examples", ignore=shutil.ignore_patterns("__pycache__", "ci"))
    (dest / "pyproject.toml").write_text('[tool.infbuild]\nrecipes = ["recipes/*.yaml", "recipes/*.json"]\n')
    for recipe in sorted((REPO / "recipes").iterdir()) if recipes is None else recipes:
        text = recipe.read_text()
        if not bench and recipe.suffix == ".json":
            text = text.rstrip().rstrip("}") + ',\n  "bench": {"enabled": false}\n}\n'
        elif not bench:
            text += "\nbench: {enabled: false}\n"
        (dest / "recipes" / recipe.name).write_text(text)
    return dest


def cpu() -> str:
    """This machine's CPU model (figures say which CPU they came from)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"
