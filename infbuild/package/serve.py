"""What a Triton image holds beyond its base (``package.serve: triton``): the target's model repository under
``/models``, and for Python-backend models the pure-Python code they import (infbuild and PyYAML) under
``/opt/infbuild/python`` on ``PYTHONPATH``; ``docker run <image>`` starts ``tritonserver`` on it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import StageFailed
from ..stamp import read_stamp

MODELS = "models"
PYTHON = "opt/infbuild/python"
ENV = {"PYTHONPATH": f"/{PYTHON}"}
CMD = ["tritonserver", f"--model-repository=/{MODELS}"]
VENDORED = ("infbuild", "yaml")  # what infbuild.runtime imports beyond numpy and torch (both in Triton's pyt-python image)


def repository_files(folder: Path, repository: str) -> dict[str, Path | bytes]:
    """The triton stage's stamped repository files, under /models."""
    stamp = read_stamp(folder)
    if stamp is None:
        raise StageFailed(f"{folder}: the Triton repository has no valid stamp: rebuild it")
    prefix = f"{repository}/"
    return {f"{MODELS}/{name[len(prefix):]}": folder / name for name in sorted(stamp.files) if name.startswith(prefix)}


def python_files() -> dict[str, Path | bytes]:
    """The vendored packages' Python sources (and infbuild's schema), under /opt/infbuild/python."""
    files: dict[str, Path | bytes] = {}
    for package in VENDORED:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise StageFailed(f"cannot vendor {package} into the Triton image: it is not installed")
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
                files[f"{PYTHON}/{package}/{path.relative_to(root).as_posix()}"] = path
    return files


def repository_stamp(folder: Path, recipe: str, target: str) -> dict[str, Path | bytes]:
    """The triton stage's stamp, signature and summary under /opt/infbuild, so that the repository under /models can
    be checked against what the build stamped and signed (``infbuild verify-image``)."""
    from ..folder import SIGNATURE, STAMP
    from .contents import PREFIX, image_stamp

    stamp = read_stamp(folder)
    if stamp is None:
        raise StageFailed(f"{folder}: the Triton repository has no valid stamp: rebuild it")
    where = f"{PREFIX}/{recipe}/{target}/{folder.name}"
    files: dict[str, Path | bytes] = {f"{where}/{STAMP}": image_stamp(stamp)}
    files.update({f"{where}/{name}": folder / name for name in stamp.files if "/" not in name})
    if (folder / SIGNATURE).is_file():
        files[f"{where}/{SIGNATURE}"] = folder / SIGNATURE
    return files
