"""What goes into a recipe's image for one target: the included artifacts' stamped files, a manifest subset,
and the labels (OCI annotations and infbuild's). Also the stable view of it that the package key uses."""
from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import stage as registry
from .. import verified
from ..errors import StageFailed
from ..folder import SIGNATURE, STAMP
from ..manifest import SCHEMA_VERSION
from ..preferred import choose_preferred
from ..reports import BenchReport, VerifyReport
from ..stamp import Stamp, read_stamp

PREFIX = "opt/infbuild"


def selection(recipe: dict[str, Any], upstream: dict[str, Path], include: str | list[str] | None = None) -> dict[str, Any]:
    """Which artifacts go in and the stamped files of each: the part of an image (or a Triton repository) that
    artifacts decide. ``include``: "preferred", "all" (every verified one) or a list of artifact names (those of
    them that passed); default the recipe's ``package.include``."""
    verify = VerifyReport.read(upstream["verify"])
    bench = BenchReport.read(upstream["bench"]) if "bench" in upstream else None
    order = verify.backends if verify else list(recipe["backends"])  # the recipe's artifacts, variants included
    results = {b: r for b, r in (verify.results if verify else {}).items() if _judged(upstream, b, r)}
    preferred = choose_preferred(results, bench.timings() if bench else None, order)
    passed = [b for b in order if (results.get(b) or {}).get("passed") is True]
    include = include if include is not None else recipe["package"]["include"]
    if include == "all":
        backends = passed
    elif include == "preferred":
        backends = [preferred] if preferred else []
    else:
        backends = [b for b in include if b in passed]
    artifacts = {}
    for backend in backends:
        stage = registry.for_backend(backend).name
        folder = upstream[stage]
        stamp = read_stamp(folder)
        artifacts[backend] = {"stage": stage, "target": folder.parent.name, "key": stamp.key if stamp else None,
                              "files": stamp.digests() if stamp else {}}
    return {"preferred": preferred, "artifacts": artifacts,
            "verify": {b: (results.get(b) or {}).get("passed") for b in backends}}


def _judged(upstream: dict[str, Path], backend: str, result: Any) -> bool:
    """Whether a verify result counts: a pass only when verify judged exactly the stamped bytes upstream (an
    artifact rebuilt since, by ``doit onnx:x`` or a build killed during verify, is not verified)."""
    if not isinstance(result, dict) or result.get("passed") is not True:
        return True  # failures and "not verified" count as they are
    stage = registry.artifacts().get(backend)
    return stage is not None and stage.name in upstream and \
        verified.passed(upstream[registry.judge().name], stage.name, upstream[stage.name], backend)


def git_revision(root: Path) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                              check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def image_files(recipe: dict[str, Any], target: str, upstream: dict[str, Path], chosen: dict[str, Any],
                io: dict[str, Any], fingerprint: dict[str, Any], bench: dict[str, Any] | None = None
                ) -> dict[str, Path | bytes]:
    """The image's files under /opt/infbuild: the chosen artifacts' tree (see ``artifact_tree``)."""
    tree = artifact_tree(recipe, target, upstream, chosen, io, fingerprint, bench)
    return {f"{PREFIX}/{name}": source for name, source in tree.items()}


def artifact_tree(recipe: dict[str, Any], target: str, upstream: dict[str, Path], chosen: dict[str, Any],
                  io: dict[str, Any], fingerprint: dict[str, Any], bench: dict[str, Any] | None = None
                  ) -> dict[str, Path | bytes]:
    """An artifacts folder holding only the chosen artifacts: ``<recipe>/<target>/<stage>/`` with their stamped
    files and stamps, and a manifest subset (I/O, the target's fingerprint, preferred, verdicts, and the settings
    bench measured with), so that ``infbuild.runtime.load`` checks and loads it as it does a build's folder."""
    if not chosen["artifacts"]:
        raise StageFailed(f"{recipe['name']}: no artifact passed verification on {target}: nothing to package")
    files: dict[str, Path | bytes] = {}
    stages: dict[str, dict[str, Any]] = {target: {}}  # the target's entry even when its artifacts are portable
    judge = registry.judge().name
    folders = [(art["stage"], upstream[art["stage"]], list(art["files"])) for art in chosen["artifacts"].values()]
    stamped_judge = read_stamp(upstream[judge])
    folders.append((judge, upstream[judge], list(stamped_judge.files) if stamped_judge else []))  # its verdict
    for stage, folder, names in folders:
        stamp = read_stamp(folder)
        if stamp is None:
            raise StageFailed(f"{recipe['name']}: {stage} on {folder.parent.name} has no valid stamp: rebuild it")
        stages.setdefault(folder.parent.name, {})[stage] = {k: stamp.to_json().get(k) for k in
                                                            ("key", "stage", "recipe", "target", "files")}
        where = f"{recipe['name']}/{folder.parent.name}/{stage}"
        for name in names:
            files[f"{where}/{name}"] = folder / name
        files[f"{where}/{STAMP}"] = image_stamp(stamp)
        if (folder / SIGNATURE).is_file():  # so the image's folders verify with model-signing too
            files[f"{where}/{SIGNATURE}"] = folder / SIGNATURE
    settings = {"bench": bench} if bench else {}
    manifest = {"schema": SCHEMA_VERSION, "recipes": {recipe["name"]: {"io": io, "targets": {
        t: {"stages": s, **({"fingerprint": fingerprint, "preferred": chosen["preferred"], **settings,
                             "verify": {b: {"passed": p} for b, p in chosen["verify"].items()}} if t == target else {})}
        for t, s in stages.items()}}}}
    files["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    return files


def bench_settings(upstream: dict[str, Path]) -> dict[str, Any] | None:
    """The settings bench measured with (thread count, session settings), which ``load`` applies, else None."""
    report = BenchReport.read(upstream["bench"]) if "bench" in upstream else None
    if report is None:
        return None
    timings = report.timings()
    return {k: timings[k] for k in ("threads", "runtime") if timings.get(k) is not None}


IMAGE_STAMP_FIELDS = ("key", "stage", "recipe", "target", "files", "inputs", "passed", "packages")


def image_stamp(stamp: Stamp) -> bytes:
    """The stamp an image carries: what the runtime checks files against (the key, the files, what the key is the
    digest of), without what differs between builds of the same key (host, time, cache), so images stay
    reproducible whether a stage was built or restored."""
    data = stamp.to_json()
    return json.dumps({k: data[k] for k in IMAGE_STAMP_FIELDS if k in data}, indent=2, sort_keys=True).encode() + b"\n"


def labels(recipe: dict[str, Any], target: str, chosen: dict[str, Any], fingerprint: dict[str, Any],
           revision: str | None) -> dict[str, str]:
    package = recipe["package"]
    out = {
        "org.opencontainers.image.title": recipe["name"],
        "org.opencontainers.image.version": str(package["version"]),
        "org.opencontainers.image.source": package.get("source") or "",
        "dev.infbuild.target": target,
        "dev.infbuild.preferred": chosen["preferred"] or "",
        "dev.infbuild.version": _version(),
        "dev.infbuild.fingerprint": json.dumps(fingerprint, sort_keys=True, separators=(",", ":")),
    }
    if recipe.get("description"):
        out["org.opencontainers.image.description"] = recipe["description"]
    if revision:
        out["org.opencontainers.image.revision"] = revision
    for backend, art in chosen["artifacts"].items():
        out[f"dev.infbuild.artifact.{backend}.key"] = art["key"] or ""
        for name, digest in sorted(art["files"].items()):
            out[f"dev.infbuild.artifact.{backend}.sha256.{name}"] = digest
    return {k: v for k, v in out.items() if v != ""}


def _version() -> str:
    try:
        return metadata.version("infbuild")
    except metadata.PackageNotFoundError:
        return "unknown"
