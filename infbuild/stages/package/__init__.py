"""package: the target's verified artifacts in a container image ``<image>:<version>-<target>``."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...folder import Outputs
from ...options import PackageOptions
from ...recipe import Recipe
from ...section import Add, Section, declare, obj
from ...stage import Placement, Stage, files_view, register
from ...stamp import Stamp
from ..common import io_fields
from ..verify import variant_fields, verified_artifacts
from .image_info import IMAGE, ImageInfo

if TYPE_CHECKING:
    from ...host import Host
    from ...stage import PlannedStage


class PackageStage(Stage):
    def hardware(self, recipe: Recipe, fingerprint: Any, device: str) -> dict[str, Any]:
        """What it assembles depends on its artifacts (their keys, upstream) and its target folder, not on this host."""
        return {}

    def wanted(self, recipe: Recipe) -> bool:
        return bool(recipe.package)

    def placement(self, recipe: Recipe, host: Host) -> Placement:
        if recipe.package is None or recipe.package["builder"] != "docker":
            return Placement()
        from ...package.engine import engine_available

        return Placement(None, engine_available())

    def upstream(self, recipe: Recipe, planned: Mapping[str, PlannedStage], required: Callable[[PlannedStage], bool]
                 ) -> tuple[str, ...]:
        serves = ("triton",) if recipe.package and recipe.package["serve"] == "triton" and "triton" in planned else ()
        return ("verify", *(("bench",) if "bench" in planned else ()), *serves, *verified_artifacts(planned))

    def upstream_view(self, recipe: Recipe, upstream: Mapping[str, tuple[Path, Stamp]]) -> dict[str, Any]:
        """Only what goes into the image: the chosen artifacts (not timings), or the Triton repository."""
        from ...package.contents import selection

        if "triton" in upstream:
            return {"triton": files_view(upstream["triton"][1])}
        return selection(recipe.to_dict(), {name: folder for name, (folder, _) in upstream.items()})

    def index(self, folder: Path, stamp: Stamp, recipe_entry: dict[str, Any], target_entry: dict[str, Any]) -> None:
        image = ImageInfo.read(folder)
        target_entry["image"] = image.index() if image else dict.fromkeys(("reference", "digest", "builder", "size", "pushed"))


DEFAULTS: dict[str, Any] = {  # the package options but image and version (required in the recipe)
    "base": {"cpu": "docker.io/library/python:3.11-slim", "cuda": "nvcr.io/nvidia/tensorrt:24.08-py3"},
    "include": "preferred", "push": False, "builder": "docker", "oci_layout": False, "registry": {},
    "dockerfile": [], "source": "", "serve": "files",
}


def _complete(given: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The defaults under the recipe's values; the base images merged per kind (Triton's for an image that serves
    with Triton)."""
    from ..triton import BASE as TRITON_BASE

    defaults = {"cpu": TRITON_BASE, "cuda": TRITON_BASE} if given.get("serve") == "triton" else DEFAULTS["base"]
    return {**DEFAULTS, **given, "base": {**defaults, **(given.get("base") or {})}}


def _check(package: dict[str, Any], data: dict[str, Any], add: Add) -> None:
    """package.image is an image repository (valid, without a tag or digest: the tag is <version>-<target>); every
    base is a valid image reference; an image that serves with Triton has a repository to serve."""
    from ...package.reference import ReferenceError_, parse

    if isinstance(package.get("image"), str) and isinstance(package.get("version"), str):
        try:
            ref = parse(f"{package['image']}:{package['version']}-cpu-x86_64-avx2")
            if ref.digest:
                add(("package", "image"), "give the repository without a digest")
        except ReferenceError_:
            add(("package", "image"), f"'{package['image']}' is not a valid image repository "
                "(lowercase registry/path, no tag: the tag is <version>-<target>)")
    for kind, base in obj(package.get("base")).items():
        if isinstance(base, str):
            try:
                parse(base)
            except ReferenceError_ as exc:
                add(("package", "base", kind), str(exc))
    if package.get("serve") == "triton" and "triton" not in data:
        add(("package", "serve"), "serving with Triton needs a triton section (triton: {} for the defaults)")


SECTION: Section[PackageOptions] = declare(Section(path=("package",), schema_file=Path(__file__).with_name("section.schema.json"),
                          optional=True, complete=_complete, check=_check))


STAGE = register(PackageStage(
    "package", 2, "device", "package the target's artifacts into a container image <image>:<version>-<target>",
    Outputs((IMAGE,), ("Dockerfile", "oci/*", "provenance.sigstore.json")), tools=("docker",),
    fields=lambda r: {"package": {k: v for k, v in (r.package or {}).items()  # serve: files is the default of old
                                  if k != "registry" and (k, v) != ("serve", "files")},
                      "backends": list(r.backends), **io_fields(r), **variant_fields(r)},
    needs=("verify",), cacheable=False, signs_images=True))
