"""node_count: a stage from one folder, outside infbuild (the README's "Adding a stage"). It reads the export stage's
program digest and writes ``nodes.json``: how many graph nodes the exported program has, and whether that stays
under the recipe's ``stages.node_count.max_nodes``. Installed, it is found through the ``infbuild.stages`` entry point
(see ``pyproject.toml`` beside this folder); nothing in infbuild names it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from infbuild.folder import Outputs
from infbuild.section import Add, Section, declare
from infbuild.stage import Stage, register


class NodeCountOptions(TypedDict):
    max_nodes: int
    fail_over: bool


def _check(section: dict[str, Any], data: dict[str, Any], add: Add) -> None:
    """fail_over without a limit that can be crossed says nothing."""
    if section.get("fail_over") and section.get("max_nodes") == 0:
        add(("stages", "node_count", "max_nodes"), "0 never fails: give a limit when fail_over is true")


SECTION: Section[NodeCountOptions] = declare(Section(
    path=("stages", "node_count"), schema_file=Path(__file__).with_name("section.schema.json"),
    defaults={"max_nodes": 0, "fail_over": False}, check=_check))

STAGE = register(Stage(
    "node_count", 1, "portable", "count the exported program's graph nodes",
    Outputs(("nodes.json",)), fields=lambda r: {"options": SECTION.of(r)}, needs=("export",), module=__name__))
