"""An interrupted build never leaves an artifact that looks complete, and the next build finishes the job."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from helpers import Project, mlp_recipe


def start_and_kill(proj: Project, sig: int, marker: str = "[aoti] compiling", delay: float = 1.0) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "doit", "build"], cwd=proj.root, env=proj.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(marker):
            time.sleep(delay)
            proc.send_signal(sig)
            break
    proc.stdout.read()
    return proc.wait(timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_killed_build_leaves_nothing_complete_and_next_build_finishes(project: Project, cpu_target: str, sig: int) -> None:
    project.add_recipe("mlp.yaml", mlp_recipe())
    assert start_and_kill(project, sig) != 0
    target = project.artifacts / "mlp" / cpu_target
    assert not (target / "aoti" / "stamp.json").exists()
    assert not (target / "aoti").exists()  # only a hidden staging folder may remain, never the final one
    if sig != signal.SIGKILL:
        assert not list(target.glob(".aoti.staging-*")), "an orderly interrupt removes its staging folder"
    time.sleep(1.0)  # a SIGKILLed build's worker notices its parent is gone within 0.5 s
    result = project.doit("build")
    assert result.returncode == 0, result.output[-3000:]
    assert result.stages_ran() == {"aoti:mlp", "verify:mlp"}  # onnx and reference had finished
    assert not list(target.glob(".aoti.*")), "leftover staging folders are cleaned up"
    assert (target / "aoti" / "stamp.json").is_file()


@pytest.mark.parametrize("marker,stage,rerun", [
    (".  onnx:mlp", "onnx", {"onnx", "reference", "aoti", "verify"}),
    (".  reference:mlp", "reference", {"reference", "aoti", "verify"}),
    ("[aoti] exporting", "aoti", {"aoti", "verify"}),
    (".  verify:mlp", "verify", {"verify"}),
])
def test_sigkill_during_each_stage_kind_rebuilds_exactly_the_unfinished(project: Project, cpu_target: str, marker: str,
                                                                        stage: str, rerun: set[str]) -> None:
    project.add_recipe("mlp.yaml", mlp_recipe())
    assert start_and_kill(project, signal.SIGKILL, marker, delay=0.3) != 0
    target = "portable" if stage in ("onnx", "reference") else cpu_target
    assert not (project.artifacts / "mlp" / target / stage / "stamp.json").exists()
    time.sleep(1.0)
    result = project.doit("build")
    assert result.returncode == 0, result.output[-3000:]
    assert result.stages_ran() == {f"{s}:mlp" for s in rerun}
    assert project.infbuild("verify-artifacts").returncode == 0
