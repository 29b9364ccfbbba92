"""A stage is one package: the example plugin stage (examples/plugin_stage, outside infbuild) declares its stage,
its recipe section (schema fragment, defaults, typed options, checks) and its worker code in one folder; installed
(an ``infbuild.stages`` entry point), it is planned, keyed, built, checked and stamped like a built-in stage, and the
recipe schema includes its section. The shipped schema file is the one the stage packages declare."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO, Project, mlp_recipe

from infbuild import recipe_schema

PLUGIN = REPO / "examples" / "plugin_stage"


def test_the_shipped_schema_is_the_one_the_stage_packages_declare() -> None:
    assert recipe_schema.main(["--check"]) == 0, "run: python -m infbuild.recipe_schema --write"
    shipped = json.loads(recipe_schema.SHIPPED.read_text())
    assert set(shipped["properties"]["stages"]["properties"]) == {"onnx", "reference", "aoti", "onnx_variants",
                                                                   "aoti_variants", "tensorrt"}
    assert {"verify", "bench", "package", "triton"} <= set(shipped["properties"])


def _installed(tmp_path: Path) -> str:
    """The plugin installed as pip would leave it: its package on the path and a dist-info naming its entry point."""
    site = tmp_path / "site"
    dist = site / "infbuild_node_count-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: infbuild-node-count\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[infbuild.stages]\nnode_count = node_count\n")
    return f"{PLUGIN}:{site}"


def test_a_stage_from_one_folder_is_planned_checked_built_and_up_to_date_after(tmp_path: Path) -> None:
    p = Project(tmp_path / "proj")
    with_plugin = p.env(PYTHONPATH=_installed(tmp_path), INFBUILD_CACHE="off")
    p.add_recipe("mlp.yaml", mlp_recipe() + "stages: {node_count: {max_nodes: 1000}}\n")

    without = p.infbuild("validate", env=p.env(INFBUILD_CACHE="off"))  # not installed: its section is unknown
    assert without.returncode != 0 and "recipes/mlp.yaml:" in without.stderr and "stages.node_count" in without.stderr

    schema = subprocess.run([sys.executable, "-c", "import json; from infbuild.recipe_schema import assemble; "
                             "print(json.dumps(assemble()['properties']['stages']['properties']['node_count']))"],
                            env=with_plugin, capture_output=True, text=True, check=True)
    assert json.loads(schema.stdout)["properties"]["max_nodes"]["minimum"] == 0

    result = p.doit("node_count:mlp", env=with_plugin)
    assert result.returncode == 0, result.output[-2000:]
    assert result.stages_ran() == {"export:mlp", "node_count:mlp"}
    folder = p.stage("mlp", "portable", "node_count")
    nodes = json.loads((folder / "nodes.json").read_text())
    program = json.loads((p.stage("mlp", "portable", "export") / "program.json").read_text())
    assert nodes == {"nodes": program["nodes"], "over": False}
    stamp = json.loads((folder / "stamp.json").read_text())
    assert stamp["inputs"]["recipe"] == {"options": {"max_nodes": 1000, "fail_over": False}}  # the defaults applied
    assert p.doit("node_count:mlp", env=with_plugin).stages_ran() == set()

    # its own check and its own schema fragment, located in the recipe
    p.add_recipe("mlp.yaml", mlp_recipe() + "stages:\n  node_count: {max_nodes: 0, fail_over: true}\n")
    bad = p.infbuild("validate", env=with_plugin)
    assert bad.returncode != 0
    assert "recipes/mlp.yaml:13: stages.node_count.max_nodes: 0 never fails" in bad.stderr, bad.stderr
    p.add_recipe("mlp.yaml", mlp_recipe() + "stages: {node_count: {max_nodes: -1}}\n")
    assert "stages.node_count.max_nodes: must be at least 0" in p.infbuild("validate", env=with_plugin).stderr

    # a real change of its option rebuilds it and nothing else; its failure is its own, located
    p.add_recipe("mlp.yaml", mlp_recipe() + "stages: {node_count: {max_nodes: 2, fail_over: true}}\n")
    failed = p.doit("node_count:mlp", env=with_plugin)
    assert failed.returncode != 0 and "more than stages.node_count.max_nodes (2)" in failed.output, failed.output[-2000:]
    assert not (folder / "stamp.json").exists() or json.loads((folder / "stamp.json").read_text()) == stamp
