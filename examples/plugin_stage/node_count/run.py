"""What the worker runs for node_count: no torch, only the export stage's program digest."""
from __future__ import annotations

import json

from infbuild.errors import StageFailed
from infbuild.stages.request import Job

from . import SECTION


def run(job: Job) -> None:
    program = json.loads((job.upstream["export"] / "program.json").read_text())
    options = SECTION.of(job.recipe)
    nodes = int(program["nodes"])
    over = bool(options["max_nodes"]) and nodes > options["max_nodes"]
    print(f"[node_count] {job.recipe.name}: {nodes} nodes", flush=True)
    if over and options["fail_over"]:
        raise StageFailed(f"{nodes} graph nodes, more than stages.node_count.max_nodes ({options['max_nodes']})")
    (job.out / "nodes.json").write_text(json.dumps({"nodes": nodes, "over": over}, indent=2) + "\n")
