"""Worker entry: ``python -m infbuild.stages REQUEST.json`` runs one stage (``infbuild/stages/<name>/run.py``).

Exit 0: outputs written, with ``result.json.tmp`` (a judging stage's failures, the packages the model imported).
Exit 1: a user-facing error, written as JSON to ``error.json.tmp``. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from .. import stage as registry
from ..errors import FieldError, InfbuildError
from .request import ERROR_FILE, WorkerRequest, WorkerResult


def _exit_with_parent() -> None:
    """A worker whose build process died (SIGKILL) stops too, instead of writing into a folder nobody owns."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _imported_packages() -> dict[str, str]:
    """The distributions building the model imported, with versions (they join the stamp)."""
    from ..packages import distributions_of

    model = sys.modules.get("infbuild.stages.model")
    imported: set[str] = getattr(model, "IMPORTED_BY_MODEL", set())
    return distributions_of(imported)


def _peak_rss_mb() -> int:
    """This worker's and its children's (compilers) peak resident set, in MiB."""
    import resource

    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) // 1024


def main(argv: list[str]) -> int:
    _exit_with_parent()
    request = WorkerRequest.read(Path(argv[0]))
    out = Path(request.out)
    try:
        failures = registry.get(request.stage).runner()(request.job())
        WorkerResult(list(failures or []), _imported_packages() if request.record_packages else None,
                     _peak_rss_mb()).write(out)
        return 0
    except FieldError as exc:
        (out / ERROR_FILE).write_text(json.dumps({"field": exc.field, "message": exc.message}), encoding="utf-8")
        return 1
    except InfbuildError as exc:
        (out / ERROR_FILE).write_text(json.dumps({"field": None, "message": str(exc)}), encoding="utf-8")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
