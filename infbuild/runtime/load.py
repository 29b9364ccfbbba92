"""infbuild.runtime.load: the manifest's artifact for this host, checked, loaded, with validated inputs.

It refuses an artifact built for another target (the failure TensorRT and -march=native users hit most)
with both fingerprints and the command that builds a matching one; ``allow_target_mismatch`` overrides it,
loudly.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .. import settings, verified
from .. import stage as registry
from ..artifacts import stage_dir
from ..errors import ArtifactError
from ..fingerprint import cpu_target, host_fingerprint, selected_gpu
from ..hashing import sha256_file
from ..manifest_index import REPAIR, ManifestIndex, RecipeEntry, TargetEntry
from ..reports import REPORT
from ..signing.trust import required_keys
from ..stamp import Stamp, read_stamp, stamp_problem
from ..verified import signature_problem

if TYPE_CHECKING:
    from ..signing.dsse import PublicKey
from ..runner import Runner
from .backends import NUMPY_DTYPES, load_backend
from .model import Model


def _summary(fp: dict[str, Any] | None, target: str) -> str:
    try:
        return _describe(fp, target)
    except (AttributeError, KeyError, TypeError):
        return f"{target} (its recorded fingerprint is damaged)"


def _describe(fp: dict[str, Any] | None, target: str) -> str:
    if not fp:
        return f"{target} (no fingerprint recorded)"
    if target.startswith("cuda-"):
        gpu = selected_gpu(fp) or {}
        return (f"{target} ({gpu.get('name', '?')}, sm {gpu.get('compute_capability', '?')}, driver "
                f"{gpu.get('driver', '?')}, TensorRT {(fp.get('tensorrt') or {}).get('version') or '-'})")
    cpu = fp.get("cpu", {})
    return f"{target} ({cpu.get('model', '?')}, {cpu.get('arch', '?')} {cpu.get('isa', '?')}, g++ {fp.get('compiler', {}).get('gxx')})"


def _mismatch(target: str, built: dict[str, Any] | None, host: dict[str, Any]) -> str | None:
    """Why an artifact of ``target`` built on ``built`` must not run on ``host`` (None when it may)."""
    if target.startswith("cpu-"):
        host_target = host["targets"]["cpu"]
        if host_target != target:
            return f"this host is {host_target}"
        if built:
            if cpu_target(built) != target:
                return f"the manifest's fingerprint for it says {cpu_target(built)}"
            missing = sorted(set(built["cpu"].get("flags", [])) - set(host["cpu"].get("flags", [])))
            if missing:
                return f"this host lacks CPU features it was compiled for: {', '.join(missing[:8])}"
        return None
    if target.startswith("cuda-"):
        gpu = selected_gpu(host)
        if gpu is None:
            return "this host has no CUDA GPU"
        if gpu["target"] != target:
            return f"this host's GPU is {gpu['target']}"
        if built and (selected_gpu(built) or {}).get("target") != target:
            return f"the manifest's fingerprint for it says {(selected_gpu(built) or {}).get('target')}"
        return None
    return None


def _stamped(root: Path, recipe: str, target: str, stage: str, listed: Any,
             trusted: Mapping[str, PublicKey] | None) -> Stamp:
    """The artifact stage's own stamp, checked: it names this stage's exact outputs, its key is the digest of what
    it was built from and the manifest lists that key, every file has its stamped sha256 and, with trusted keys, a
    trusted key signed exactly those digests for exactly that key. The manifest is only an index: nothing is loaded
    on its word alone."""
    from ..hashing import digest_json

    folder = stage_dir(root, recipe, target, stage)
    stamp = read_stamp(folder)
    if stamp is None:
        raise ArtifactError(f"{recipe}: {folder / 'stamp.json'} is missing or damaged: rebuild with doit build")
    why = stamp_problem(stamp, stage, recipe, target, registry.get(stage).outputs)
    if why or digest_json(stamp.inputs) != stamp.key:
        raise ArtifactError(f"{recipe}: {folder / 'stamp.json'} was altered ({why or 'its key is not the digest of its inputs'})"
                            ": rebuild with doit build")
    if not isinstance(listed, dict) or listed.get("key") != stamp.key:
        raise ArtifactError(f"{recipe}: the manifest's {stage} entry for {target} is not the build stamped in {folder}: "
                            f"{REPAIR}")
    for name, meta in stamp.files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{recipe}: {path} is missing: rebuild with doit build")
        if sha256_file(path) != meta.get("sha256"):
            raise ArtifactError(f"{recipe}: {path} does not match its stamped sha256 (tampered, corrupted or "
                                "rebuilt without the manifest): rebuild with doit build")
    why = signature_problem(folder, stamp, trusted)
    if why:
        raise ArtifactError(f"{recipe}: refusing {stage}: {why}")
    return stamp


def _io(stamp: Stamp, entry: RecipeEntry) -> dict[str, Any]:
    """Input names, dtypes, shapes and dim bounds from the stamped build (what the artifact was built for), the
    output names from the stamp too where it records them; checked so that a damaged index cannot get through."""
    built = (stamp.inputs or {}).get("recipe") or {}
    recipe, index = entry.name, entry.index
    io = {**entry.io, **{k: built[k] for k in ("inputs", "dims", "outputs") if k in built}}
    try:
        inputs, dims, outputs = index.object(io["inputs"], "io.inputs"), index.object(io.get("dims") or {}, "io.dims"), io["outputs"]
        for name, spec in inputs.items():
            if spec["dtype"] not in NUMPY_DTYPES:
                raise ValueError(f"input {name} has unknown dtype {spec['dtype']!r}")
            for size in spec["shape"]:
                if not isinstance(size, int) and not (isinstance(dims.get(size), dict) and isinstance(dims[size].get("min"), int)
                                                      and isinstance(dims[size].get("max"), int)):
                    raise ValueError(f"input {name}: dim {size!r} has no min/max")
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise ValueError("outputs is not a list of names")
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{recipe}: the input/output description is damaged ({exc}): {REPAIR}") from None
    return io


def load(artifacts: str | os.PathLike[str], recipe: str, target: str | None = None, backend: str | None = None, *,
         variant: str | None = None, allow_target_mismatch: bool = False, threads: int | None = None,
         check_finite: bool = True, trusted_keys: Sequence[str | os.PathLike[str]] | None = None) -> Model:
    """Load ``recipe``'s artifact for this host from an artifacts folder (or its manifest.json): the target's
    preferred one, or ``backend`` (and its ``variant``, e.g. ``backend="onnxruntime", variant="int8_dynamic"``; or
    ``backend="onnxruntime:int8_dynamic"``). Inputs holding NaN or infinities are refused unless
    ``check_finite=False``. With trusted keys (``trusted_keys``, else ``INFBUILD_TRUSTED_KEYS`` or the project's
    ``[tool.infbuild] trusted_keys``) the artifact and its verify report must be signed by one of them (or by this
    machine's own key)."""
    if variant is not None:
        if backend is None:
            raise ArtifactError(f"{recipe}: variant '{variant}' needs its backend (backend=...)")
        backend = f"{backend}:{variant}"
    index = ManifestIndex.read(Path(artifacts))
    root = index.root
    trusted = required_keys(root, trusted_keys)
    entry = index.recipe(recipe)
    host = host_fingerprint()
    target = _choose_target(entry, target, host, allow_target_mismatch)
    here = entry.target(target)
    # Called from load itself: its warning's stacklevel=3 points at load's caller.
    _check_target(recipe, target, here.fingerprint, host, allow_target_mismatch)
    backend = _choose_backend(entry, here, backend)
    stage = registry.artifacts()[backend].name
    stage_target = entry.holding(stage, (target, "portable"))
    if stage_target is None:
        raise ArtifactError(f"{recipe}: the manifest lists no {stage} stage for {target}")
    stamp = _stamped(root, recipe, stage_target, stage, entry.target(stage_target).stages[stage], trusted)
    _check_verified(root, recipe, target, stage, stamp, backend, trusted)
    io = _io(stamp, entry)
    if threads is None:  # the settings bench measured with (its thread count), unless the caller sets its own
        threads = here.bench_threads
    runner = _runner(backend, root / recipe / stage_target / stage, io, target, threads, here.bench_runtime)
    return Model(recipe, target, backend, io, runner, check_finite)


def _choose_target(entry: RecipeEntry, target: str | None, host: dict[str, Any], allow_target_mismatch: bool) -> str:
    """The target asked for, else this host's; either way one the manifest lists."""
    target = target or _host_target(entry, host, allow_target_mismatch)
    if target not in entry.targets:
        raise ArtifactError(f"{entry.name}: no target {target} in the manifest (built: {', '.join(sorted(entry.targets))})")
    return target


def _choose_backend(entry: RecipeEntry, here: TargetEntry, backend: str | None) -> str:
    """The backend asked for, else the target's preferred one; a known backend the recipe was built for."""
    recipe, target, root = entry.name, here.name, entry.index.root
    backend = backend or here.preferred
    if backend is None:
        raise ArtifactError(f"{recipe}: no artifact passed verification on {target}; see "
                            f"{root / recipe / target / registry.judge().name / REPORT}")
    by_backend = registry.artifacts()
    if backend not in by_backend:
        raise ArtifactError(f"{recipe}: unknown backend '{backend}' (known: {', '.join(by_backend)})")
    built_with = list(entry.index.object(here.data.get("verify") or {}, "verify"))
    if built_with and backend not in built_with:
        raise ArtifactError(f"{recipe}: no {backend} artifact: the recipe was not built for it "
                            f"(its backends: {', '.join(built_with)})")
    return backend


def _check_verified(root: Path, recipe: str, target: str, stage: str, stamp: Stamp, backend: str,
                    trusted: Mapping[str, PublicKey] | None) -> None:
    """Refuse an artifact unless the stamped verify report on ``target`` passed exactly these bytes."""
    found, why = verified.verdict(stage_dir(root, recipe, target, verified.JUDGE), stage, stamp, backend, trusted)
    if found is None:
        raise ArtifactError(f"{recipe}: the {backend} artifact on {target} is not verified: {why}")
    verdict = found
    if verdict.get("passed") is not True:
        raise ArtifactError(f"{recipe}: the {backend} artifact on {target} has not passed verification "
                            f"({verdict.get('status') or ('failed' if verdict.get('passed') is False else 'not verified')})")


def _runner(backend: str, folder: Path, io: dict[str, Any], target: str, threads: int | None,
            runtime: dict[str, Any]) -> Runner:
    """The backend's runner over the artifact folder, on the device the artifact was built for."""
    dtypes = {n: spec["dtype"] for n, spec in io["inputs"].items()}
    device = "cuda" if target.startswith("cuda-") else "cpu"
    return load_backend(backend, folder, tuple(io["outputs"]), dtypes, device=device, threads=threads, runtime=runtime)


def _host_target(entry: RecipeEntry, host: dict[str, Any], allow_target_mismatch: bool) -> str:
    """This host's target among those built (its GPU's first, then its CPU's)."""
    mine = [t for t in (host["targets"].get("cuda"), host["targets"]["cpu"]) if t and t in entry.targets]
    built = sorted(t for t in entry.targets if t != "portable")
    if not mine:
        if not (allow_target_mismatch and built):
            here = "; ".join(_summary(host, t) for t in (host["targets"].get("cuda"), host["targets"]["cpu"]) if t)
            there = "; ".join(_summary(entry.fingerprint_of(t), t) for t in built) or "nothing"
            raise ArtifactError(f"{entry.name}: no artifacts for this host ({here}); built for: {there}. "
                                "Build matching ones here with: doit build")
        mine = built
    return mine[0]


def _check_target(recipe: str, target: str, built_fp: Any, host: dict[str, Any], allow_target_mismatch: bool) -> None:
    """Refuse (or, when allowed, loudly accept) an artifact whose target is not this host's."""
    built_fp = built_fp if isinstance(built_fp, dict) else None
    try:
        why = _mismatch(target, built_fp, host)
    except (KeyError, TypeError, AttributeError):
        why = "the manifest's fingerprint for it is damaged"
    if not why:
        return
    mine = host["targets"]["cuda"] if target.startswith("cuda-") and host["targets"]["cuda"] else host["targets"]["cpu"]
    message = (f"{recipe}: refusing artifacts built for {_summary(built_fp, target)}: {why} ({_summary(host, mine)}). "
               f"Build matching ones on this host with: doit build (or infbuild build verify:{recipe})")
    if not allow_target_mismatch and not settings.flag("allow_target_mismatch"):
        raise ArtifactError(message)
    warnings.warn("LOADING A MISMATCHED ARTIFACT (allow_target_mismatch): it may crash with illegal "
                  "instructions or compute wrong results. " + message, RuntimeWarning, stacklevel=3)
    print("WARNING: " + message, file=sys.stderr)
