"""Memory-aware admission for parallel builds (``doit -n N``): a stage's worker starts only when its expected peak
plus those of the stages already running fits in the memory budget (``memory_mb``, default 80 % of RAM), so two
base-sized exports do not take the machine down together. A stage expected to need more than the whole budget
still runs, alone. Reservations live in ``artifacts/.infbuild/memory.json`` under a lock, by pid: a build that
died leaves nothing reserved."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..console import say
from ..filelock import flocked
from ..jsonio import read_mapping, write_atomic
from ..stage import PlannedStage
from ..stamp import read_stamp

BASE_MB = 600  # a worker with torch and the exporters imported, before the model
POLL_S = 0.5


def total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def budget_mb(configured: int | None) -> int:
    return configured if configured else int(total_mb() * 0.8)


def expected_mb(p: PlannedStage, root: Path, siblings: dict[str, PlannedStage]) -> int:
    """The stage's last recorded peak (its stamp's ``peak_rss_mb``, still there while it is rebuilt), else an
    estimate from what it loads: 3x the fp32 weights (the model, the exporter's copy, the artifact being written)
    — from the weights file, or the parameter count the export stage recorded — on top of a worker's base."""
    stamp = read_stamp(p.folder)
    if stamp and stamp.peak_rss_mb:
        return int(stamp.peak_rss_mb)
    weights = 0
    if p.recipe.model.weights and (root / p.recipe.model.weights).is_file():
        weights = (root / p.recipe.model.weights).stat().st_size
    else:
        for sibling in siblings.values():
            weights = max(weights, 4 * sibling.stage.recorded_parameters(sibling.folder))
    return BASE_MB + 3 * weights // (1 << 20)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def admit(held: dict[str, Any], wanted: int, budget: int) -> bool:
    """Whether a stage expected to need ``wanted`` MB may start beside the reservations ``held``: it fits in what
    they leave of the budget, or nothing else runs (then it runs alone, whatever it needs)."""
    reserved = sum(int(r["mb"]) for r in held.values())
    return not held or reserved + wanted <= budget


@contextmanager
def reserved(artifacts: Path, task: str, wanted: int, budget: int, waiting: Callable[[str], None] = say
             ) -> Iterator[None]:
    """Hold a reservation of ``wanted`` MB for ``task`` while the block runs, waiting (saying so once) until it fits."""
    path = artifacts / ".infbuild" / "memory.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}:{task}"
    told = False
    while True:
        with _locked(path) as table:
            held = {k: r for k, r in table.items() if _alive(int(r["pid"])) and k != token}
            if admit(held, wanted, budget):
                held[token] = {"pid": os.getpid(), "mb": wanted, "task": task}
                write_atomic(path, held, durable=False, indent=None)
                break
            write_atomic(path, held, durable=False, indent=None)
        if not told:
            running = ", ".join(f"{r['task']} ~{r['mb']} MB" for r in held.values())
            waiting(f"{task}: waiting for memory: it is expected to need ~{wanted} MB and {running} leave less of "
                    f"the {budget} MB budget (memory_mb / INFBUILD_MEMORY_MB)")
            told = True
        time.sleep(POLL_S)
    try:
        yield
    finally:
        with _locked(path) as table:
            table.pop(token, None)
            write_atomic(path, table, durable=False, indent=None)


@contextmanager
def _locked(path: Path) -> Iterator[dict[str, Any]]:
    with flocked(path.with_suffix(".lock")):
        yield read_mapping(path)
