"""The recipe's JSON Schema, assembled: the core (``schema/recipe.core.json``: name, model, inputs, dims, outputs,
backends, variants, runtime, samples) with every stage package's section (``infbuild.section``) at its path, and
each backend's ``variants`` as its stages register them. The shipped ``schema/recipe.schema.json`` is this, written
out for editors and validators; a test checks it is current.

    python -m infbuild.recipe_schema --check    # exit 1 when the shipped file is not the assembled schema
    python -m infbuild.recipe_schema --write    # write it
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import stage as registry
from .section import sections

SCHEMA_DIR = Path(__file__).with_name("schema")
CORE = SCHEMA_DIR / "recipe.core.json"
SHIPPED = SCHEMA_DIR / "recipe.schema.json"


def assemble() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(CORE.read_text(encoding="utf-8"))
    for section in sections():
        where = schema
        for part in section.path[:-1]:
            where = where["properties"][part]
        if section.path[-1] in where.setdefault("properties", {}):
            raise ValueError(f"recipe section {'.'.join(section.path)} is also in {CORE.name}")
        where["properties"][section.path[-1]] = section.schema
    for backend, spec in schema["properties"]["variants"]["properties"].items():  # every registered variant, in order
        spec["items"]["enum"] = [s.variant for s in registry.stages() if s.backend == backend and s.variant]
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render(assemble())
    if args == ["--write"]:
        SHIPPED.write_text(text, encoding="utf-8")
        return 0
    if args == ["--check"]:
        if SHIPPED.read_text(encoding="utf-8") == text:
            return 0
        print(f"{SHIPPED}: not the schema the stage packages declare; run: python -m infbuild.recipe_schema --write",
              file=sys.stderr)
        return 1
    print("usage: python -m infbuild.recipe_schema --check | --write", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
