"""Worker entry: ``python -m infbuild.stages REQUEST.json``.

Exit 0: outputs written. Exit 3: verify finished with failures (report written). Exit 1: a user-facing
error, written as JSON to the request's ``error_file``. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
from pathlib import Path

from ..errors import FieldError, InfbuildError
from ..recipe import Recipe

STAGE_MODULES = {"onnx": "onnx", "reference": "reference", "aoti": "aoti", "verify": "verify",
                 "trt_timing_cache": "trt_timing_cache", "trt_engine": "trt_engine", "bench": "bench",
                 "package": "package"}
NEEDS_TOOLS = {"trt_timing_cache", "trt_engine", "package"}


def _exit_with_parent() -> None:
    """A worker whose build process died (SIGKILL) stops too, instead of writing into a folder nobody owns."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str]) -> int:
    _exit_with_parent()
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    error_file = Path(request["error_file"])
    try:
        recipe = Recipe.from_dict(request["recipe"])
        module = importlib.import_module(f"infbuild.stages.{STAGE_MODULES[request['stage']]}")
        upstream = {k: Path(v) for k, v in request["upstream"].items()}
        args = (recipe, Path(request["root"]), Path(request["out"]), upstream, request["device"])
        code = module.run(*args, request["tools"]) if request["stage"] in NEEDS_TOOLS else module.run(*args)
        if request.get("packages_file"):  # what building the model imported: those versions join the stamp
            from ..packages import distributions_of

            model = sys.modules.get("infbuild.stages.model")
            imported: set[str] = getattr(model, "IMPORTED_BY_MODEL", set())
            Path(request["packages_file"]).write_text(json.dumps(distributions_of(imported)), encoding="utf-8")
        return int(code or 0)
    except FieldError as exc:
        error_file.write_text(json.dumps({"field": exc.field, "message": exc.message}), encoding="utf-8")
        return 1
    except InfbuildError as exc:
        error_file.write_text(json.dumps({"field": None, "message": str(exc)}), encoding="utf-8")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
