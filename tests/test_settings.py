"""The settings table (infbuild/settings.py) is the only reader of INFBUILD_* variables, and `infbuild config` prints
every setting's effective value and where it came from (default, pyproject.toml, environment), secrets as set/unset."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from helpers import Project

from infbuild import settings
from infbuild.engine.context import BuildOptions
from infbuild.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent.parent / "infbuild"


def _infbuild_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("INFBUILD_")


def _environment(node: ast.AST) -> bool:
    """``os.environ``, ``environ``, ``env``, ``self.env``, ...: something that holds environment variables."""
    text = ast.unparse(node)
    return "environ" in text or text.split(".")[-1] in ("env", "environment")


def environment_reads(tree: ast.AST) -> list[int]:
    """Lines reading or writing an ``INFBUILD_*`` variable by name: ``os.environ.get("INFBUILD_X")``,
    ``os.getenv(...)``, ``env["INFBUILD_X"]``, ``"INFBUILD_X" in os.environ``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and _infbuild_name(node.args[0]):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "getenv" or (isinstance(func, ast.Attribute) and name in ("get", "pop", "setdefault")
                                    and _environment(func.value)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and _infbuild_name(node.slice) and _environment(node.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and _infbuild_name(node.left) and \
                any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and _environment(node.comparators[0]):
            lines.append(node.lineno)
    return lines


def test_no_module_but_settings_reads_an_infbuild_variable() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
             if path != PACKAGE / "settings.py"
             for line in environment_reads(ast.parse(path.read_text(encoding="utf-8"), str(path)))]
    assert not found, f"INFBUILD_* variables read outside infbuild/settings.py (add them to SETTINGS): {found}"


def test_the_check_finds_what_it_looks_for() -> None:
    source = ('import os\nos.environ.get("INFBUILD_X")\nos.getenv("INFBUILD_Y")\nenv["INFBUILD_Z"] = "1"\n'
              '"INFBUILD_W" in os.environ\nparams["INFBUILD_RECIPE"]\nos.environ.get(name)\n')
    assert environment_reads(ast.parse(source)) == [2, 3, 4, 5]


def test_the_table_names_each_variable_once() -> None:
    variables = [s.env for s in settings.SETTINGS.values() if s.env]
    assert len(variables) == len(set(variables)) and all(v.startswith("INFBUILD_") for v in variables)
    assert all(s.doc for s in settings.SETTINGS.values())


def test_environment_wins_over_pyproject_over_default(tmp_path: Path) -> None:
    config = {"memory_mb": 512, "trusted_keys": ["keys/a.pub"]}
    assert settings.resolve("memory_mb", environ={}).source == "default"
    found = settings.resolve("memory_mb", config, tmp_path, environ={})
    assert (found.value, found.source, found.origin) == (512, "pyproject", "[tool.infbuild] memory_mb in pyproject.toml")
    found = settings.resolve("memory_mb", config, tmp_path, environ={"INFBUILD_MEMORY_MB": "256"})
    assert (found.value, found.origin) == (256, "environment variable INFBUILD_MEMORY_MB")
    assert settings.value("trusted_keys", config, tmp_path, environ={"INFBUILD_TRUSTED_KEYS": ""}) == (tmp_path / "keys/a.pub",)
    assert settings.value("cache", {"cache": "local"}, tmp_path, environ={}) == ("local",)
    assert settings.value("cache", {"cache": ["local"]}, tmp_path, environ={"INFBUILD_CACHE": "off"}) == ()
    assert settings.value("artifacts", {}, tmp_path, environ={}) == tmp_path / "artifacts"
    assert settings.value("artifacts", {}, tmp_path, environ={"INFBUILD_ARTIFACTS": "out"}) == tmp_path / "out"
    with pytest.raises(ConfigError, match=r"pyproject.toml: tool.infbuild.memory_mb='lots': expected a whole number"):
        settings.value("memory_mb", {"memory_mb": "lots"}, tmp_path, environ={})


def test_require_and_force_cross_to_the_doit_process_by_their_settings() -> None:
    child: dict[str, str] = {"INFBUILD_REQUIRE": "aoti"}
    settings.pass_on(child, "require", ["onnx:mlp"])
    settings.pass_on(child, "force", [])
    assert child == {"INFBUILD_REQUIRE": "aoti,onnx:mlp"}
    options = BuildOptions.from_env(child, require_var="trt_engine")
    assert options.required == {"aoti", "onnx:mlp", "trt_engine"} and options.forced == frozenset()


def test_config_says_where_each_setting_came_from(project: Project) -> None:
    (project.root / "pyproject.toml").write_text(
        '[tool.infbuild]\nrecipes = ["recipes/*.yaml"]\nmemory_mb = 2048\ncache = ["local"]\n', encoding="utf-8")
    env = project.env(INFBUILD_CACHE="off", INFBUILD_CACHE_PASSWORD="hunter2", INFBUILD_REQUIRE="aoti")
    done = project.infbuild("config", env=env)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert lines["project"] == f"project {project.root.resolve()}"
    assert lines["heartbeat_s"].split()[1:] == ["30.0", "default"]
    assert lines["memory_mb"].split()[1] == "2048" and lines["memory_mb"].endswith("[tool.infbuild] memory_mb in pyproject.toml")
    assert lines["cache"].split()[1] == "-" and lines["cache"].endswith("environment variable INFBUILD_CACHE")
    assert lines["cache_password"].split()[1] == "set" and "hunter2" not in done.stdout
    as_json = project.infbuild("config", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    found = {s["name"]: s for s in json.loads(as_json.stdout)["settings"]}
    assert set(found) == set(settings.SETTINGS)
    assert found["memory_mb"]["value"] == 2048 and found["memory_mb"]["source"] == "pyproject"
    assert found["heartbeat_s"]["value"] == 30.0 and found["heartbeat_s"]["source"] == "default"
    assert (found["require"]["value"], found["require"]["source"]) == (["aoti"], "environment")
    assert found["require"]["env"] == "INFBUILD_REQUIRE" and "--require" in found["require"]["flag"]
    assert found["cache_password"]["value"] == "set" and "hunter2" not in as_json.stdout
    assert found["cache_username"]["value"] is None and found["artifacts"]["value"] == str(project.artifacts.resolve())
    unset = json.loads(project.infbuild("config", "--json").stdout)
    assert next(s for s in unset["settings"] if s["name"] == "cache_password")["value"] == "unset"


@pytest.mark.parametrize("env,toml,named", [
    ({"INFBUILD_HEARTBEAT_S": "soon"}, "", "INFBUILD_HEARTBEAT_S='soon'"),
    ({"INFBUILD_WORKERS": "threads"}, "", "INFBUILD_WORKERS='threads'"),
    ({"INFBUILD_ALLOW_TARGET_MISMATCH": "maybe"}, "", "INFBUILD_ALLOW_TARGET_MISMATCH='maybe'"),
    ({}, "memory_mb = -1\n", "tool.infbuild.memory_mb='-1'"),
    ({}, 'signing_key_passphrase_env = "not a name"\n', "tool.infbuild.signing_key_passphrase_env"),
])
def test_config_with_a_wrong_setting_is_one_line_naming_it(project: Project, env: dict[str, str], toml: str,
                                                           named: str) -> None:
    (project.root / "pyproject.toml").write_text(f"[tool.infbuild]\n{toml}", encoding="utf-8")
    for args in (("config",), ("config", "--json")):
        done = project.infbuild(*args, env=project.env(**env))
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert len(done.stderr.strip().splitlines()) == 1 and named in done.stderr, done.stderr
