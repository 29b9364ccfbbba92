"""The build engine without doit: ``BuildContext`` + ``execute(ctx, task) -> Outcome`` in-process (the worker is
still a real subprocess: real ONNX export, real onnxruntime verify), and the engine's build lock whatever
reporter doit runs with."""
from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Project, mlp_recipe

from infbuild.engine import BuildContext, execute
from infbuild.stamp import read_stamp


@pytest.fixture
def onnx_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("INFBUILD_CACHE", "off")
    return Project.with_recipes(tmp_path / "p", {"a.yaml": mlp_recipe(name="a") + "backends: [onnxruntime, tensorrt]\n"})


def test_execute_builds_each_stage_and_says_how(onnx_only: Project) -> None:
    ctx = BuildContext.load(onnx_only.root)
    assert list(ctx.planned) == ["export:a", "onnx:a", "reference:a", "trt_timing_cache:a", "trt_engine:a", "verify:a"]
    for task in ("export:a", "onnx:a", "reference:a", "verify:a"):
        outcome = execute(ctx, task)
        assert (outcome.task, outcome.status, outcome.message) == (task, "built", None)
        assert outcome.values() == {"infbuild": {"outcome": "built", "seconds": outcome.seconds}}
        p = ctx.planned[task]
        stamp = read_stamp(p.folder)
        assert stamp is not None and (stamp.stage, stamp.recipe, stamp.target) == (p.stage.name, "a", p.target)
        assert ctx.up_to_date(p) and ctx.staleness(p) is None
    assert read_stamp(ctx.planned["verify:a"].folder).passed is True  # type: ignore[union-attr]
    assert "onnx" in (onnx_only.artifacts / "manifest.json").read_text()  # each commit indexes itself


def test_execute_refuses_what_this_host_cannot_build_and_what_lacks_upstreams(onnx_only: Project) -> None:
    ctx = BuildContext.load(onnx_only.root)
    if ctx.host.cuda_target is None:
        refused = execute(ctx, "trt_engine:a")
        assert refused.status == "failed" and not refused.ok
        assert refused.message == "trt_engine:a: not buildable here: no CUDA GPU on this host (nvidia-smi finds none)"
    early = execute(ctx, "verify:a")  # nothing upstream built yet: one line naming what is missing
    assert early.status == "failed" and early.message is not None
    assert early.message.startswith("verify:a: upstream stage reference:a has not been built")
    assert not ctx.planned["verify:a"].folder.exists()


def test_a_second_build_waits_for_the_lock_whatever_the_reporter(onnx_only: Project) -> None:
    """The lock is the engine's (taken before the first stage is checked), not a reporter's: `doit --reporter
    executed-only` waits too."""
    lock_dir = onnx_only.artifacts / ".infbuild"
    lock_dir.mkdir(parents=True)
    with open(lock_dir / "build.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        proc = subprocess.Popen([sys.executable, "-m", "doit", "--reporter", "executed-only", "onnx:a"],
                                cwd=onnx_only.root, env=onnx_only.env(INFBUILD_CACHE="off"), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(8)
        assert proc.poll() is None, proc.communicate()[0]  # still waiting
        assert not (onnx_only.artifacts / "a" / "portable" / "onnx").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "waiting for another build" in out and "(pid 4242)" in out
    assert read_stamp(onnx_only.artifacts / "a" / "portable" / "onnx") is not None


def test_parallel_stages_start_only_when_their_expected_peaks_fit_the_memory_budget(tmp_path: Path) -> None:
    """doit -n N: a stage waits (saying so once) while its expected peak does not fit beside the running ones'; a
    stage bigger than the whole budget still runs, alone; a dead build's reservation does not count."""
    import json
    import threading
    import time

    from infbuild.engine.memory import admit, reserved

    assert admit({}, 5000, 1000)  # alone: runs whatever it needs
    assert admit({"a": {"mb": 400}}, 500, 1000) and not admit({"a": {"mb": 600}}, 500, 1000)
    events: list[str] = []
    said: list[str] = []
    first_in = threading.Event()

    def stage(task: str, hold: float) -> None:
        with reserved(tmp_path, task, 600, 1000, waiting=said.append):
            events.append(f"start {task}")
            first_in.set()
            time.sleep(hold)
            events.append(f"end {task}")

    a = threading.Thread(target=stage, args=("onnx:a", 1.0))
    a.start()
    first_in.wait(5)
    b = threading.Thread(target=stage, args=("onnx:b", 0.0))
    b.start()
    a.join()
    b.join()
    assert events == ["start onnx:a", "end onnx:a", "start onnx:b", "end onnx:b"]
    assert said == ["onnx:b: waiting for memory: it is expected to need ~600 MB and onnx:a ~600 MB leave less of the "
                    "1000 MB budget (memory_mb / INFBUILD_MEMORY_MB)"]
    (tmp_path / ".infbuild" / "memory.json").write_text(json.dumps({"999999:x": {"pid": 999999, "mb": 900, "task": "x"}}))
    with reserved(tmp_path, "onnx:c", 600, 1000, waiting=said.append):  # pid 999999 is gone: nothing to wait for
        pass
    assert len(said) == 1


def test_a_stage_is_expected_to_need_its_last_peak_or_three_times_its_weights(onnx_only: Project) -> None:
    from infbuild.engine.memory import BASE_MB, expected_mb

    ctx = BuildContext.load(onnx_only.root)
    p = ctx.planned["onnx:a"]
    assert expected_mb(p, onnx_only.root, ctx.siblings(p)) == BASE_MB  # nothing known yet: a worker's base
    (ctx.planned["export:a"].folder).mkdir(parents=True)
    (ctx.planned["export:a"].folder / "program.json").write_text('{"parameters": 100000000}')  # 400 MB of fp32
    assert expected_mb(p, onnx_only.root, ctx.siblings(p)) == BASE_MB + 3 * 400_000_000 // (1 << 20)
