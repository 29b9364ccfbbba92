"""infbuild.runtime.load: the manifest's artifact for this host, checked, loaded, with validated inputs.

It refuses an artifact built for another target (the failure TensorRT and -march=native users hit most)
with both fingerprints and the command that builds a matching one; ``allow_target_mismatch`` overrides it,
loudly.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ArtifactError, InputError
from ..fingerprint import cpu_target, host_fingerprint, selected_gpu
from ..hashing import sha256_file
from ..plan import ARTIFACT_STAGE
from .backends import NUMPY_DTYPES, Runner, artifact_device, load_backend



def _summary(fp: dict[str, Any] | None, target: str) -> str:
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


class Model:
    """A loaded artifact: call with keyword arrays named after the recipe's inputs; get {output: array}."""

    def __init__(self, recipe: str, target: str, backend: str, io: dict[str, Any], runner: Runner) -> None:
        self.recipe, self.target, self.backend = recipe, target, backend
        self.inputs: dict[str, Any] = io["inputs"]
        self.dims: dict[str, Any] = io["dims"] or {}
        self.outputs: list[str] = io["outputs"]
        self.runner = runner

    def __repr__(self) -> str:
        return f"<infbuild Model {self.recipe} {self.backend} on {self.target}>"

    def validate(self, given: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in given]
        unknown = [n for n in given if n not in self.inputs]
        if missing or unknown:
            raise InputError(f"{self.recipe}: inputs must be {', '.join(self.inputs)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        arrays: dict[str, np.ndarray] = {}
        bound: dict[str, tuple[int, str]] = {}
        for name, spec in self.inputs.items():
            value = given[name]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu()
                value = (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
            array = np.asarray(value)
            expected = np.dtype(NUMPY_DTYPES[spec["dtype"]])
            if array.dtype != expected:
                raise InputError(f"{self.recipe}: input {name} has dtype {array.dtype}, expected {expected} "
                                 f"(recipe dtype {spec['dtype']})")
            shape = spec["shape"]
            if array.ndim != len(shape):
                raise InputError(f"{self.recipe}: input {name} has rank {array.ndim} {list(array.shape)}, "
                                 f"expected rank {len(shape)} {shape}")
            for axis, (size, want) in enumerate(zip(array.shape, shape)):
                if isinstance(want, int):
                    if size != want:
                        raise InputError(f"{self.recipe}: input {name} axis {axis} is {size}, expected {want}")
                    continue
                dim = self.dims[want]
                if not dim["min"] <= size <= dim["max"]:
                    raise InputError(f"{self.recipe}: input {name} axis {axis} ({want}) is {size}, outside "
                                     f"{dim['min']}..{dim['max']} that the artifacts were built for")
                if want in bound and bound[want][0] != size:
                    raise InputError(f"{self.recipe}: dim {want} is {size} in {name} but {bound[want][0]} in {bound[want][1]}")
                bound[want] = (size, name)
            arrays[name] = np.ascontiguousarray(array)
        return arrays

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        return self.runner(self.validate(inputs))


def _manifest(path: Path) -> tuple[dict[str, Any], Path]:
    manifest_path = path if path.is_file() else path / "manifest.json"
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8")), manifest_path.parent
    except FileNotFoundError:
        raise ArtifactError(f"no manifest at {manifest_path}: build first (doit build)") from None
    except ValueError as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({exc}): rebuild it with doit build") from None


def load(artifacts: str | os.PathLike[str], recipe: str, target: str | None = None, backend: str | None = None, *,
         allow_target_mismatch: bool = False, threads: int | None = None) -> Model:
    """Load ``recipe``'s artifact for this host from an artifacts folder (or its manifest.json)."""
    manifest, root = _manifest(Path(artifacts))
    entry = (manifest.get("recipes") or {}).get(recipe)
    if entry is None:
        known = ", ".join(sorted(manifest.get("recipes") or {})) or "none"
        raise ArtifactError(f"no recipe '{recipe}' in {root / 'manifest.json'} (built: {known})")
    host = host_fingerprint()
    targets = entry.get("targets") or {}
    if target is None:
        mine = [t for t in (host["targets"].get("cuda"), host["targets"]["cpu"]) if t and t in targets]
        built = sorted(t for t in targets if t != "portable")
        if not mine:
            if not (allow_target_mismatch and built):
                here = "; ".join(_summary(host, t) for t in (host["targets"].get("cuda"), host["targets"]["cpu"]) if t)
                there = "; ".join(_summary(targets[t].get("fingerprint"), t) for t in built) or "nothing"
                raise ArtifactError(f"{recipe}: no artifacts for this host ({here}); built for: {there}. "
                                    "Build matching ones here with: doit build")
            mine = built
        target = mine[0]
    if target not in targets:
        raise ArtifactError(f"{recipe}: no target {target} in the manifest (built: {', '.join(sorted(targets))})")
    built_fp = targets[target].get("fingerprint")
    why = _mismatch(target, built_fp, host)
    if why:
        message = (f"{recipe}: refusing artifacts built for {_summary(built_fp, target)}: {why} "
                   f"({_summary(host, host['targets']['cuda'] if target.startswith('cuda-') and host['targets']['cuda'] else host['targets']['cpu'])}). "
                   f"Build matching ones on this host with: doit build (or infbuild build verify:{recipe})")
        if not allow_target_mismatch and not os.environ.get("INFBUILD_ALLOW_TARGET_MISMATCH"):
            raise ArtifactError(message)
        warnings.warn("LOADING A MISMATCHED ARTIFACT (allow_target_mismatch): it may crash with illegal "
                      "instructions or compute wrong results. " + message, RuntimeWarning, stacklevel=2)
        print("WARNING: " + message, file=sys.stderr)
    backend = backend or targets[target].get("preferred")
    if backend is None:
        raise ArtifactError(f"{recipe}: no artifact passed verification on {target}; see "
                            f"{root / recipe / target / 'verify' / 'report.json'}")
    if backend not in ARTIFACT_STAGE:
        raise ArtifactError(f"{recipe}: unknown backend '{backend}' (known: {', '.join(ARTIFACT_STAGE)})")
    verdict = (targets[target].get("verify") or {}).get(backend) or {}
    if verdict.get("passed") is not True:
        raise ArtifactError(f"{recipe}: the {backend} artifact on {target} has not passed verification "
                            f"({verdict.get('status') or ('failed' if verdict.get('passed') is False else 'not verified')})")
    stage = ARTIFACT_STAGE[backend]
    stage_target = next((t for t in (target, "portable") if stage in (targets.get(t) or {}).get("stages", {})), None)
    if stage_target is None:
        raise ArtifactError(f"{recipe}: the manifest lists no {stage} stage for {target}")
    folder = root / recipe / stage_target / stage
    for name, meta in targets[stage_target]["stages"][stage]["files"].items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{recipe}: {path} is missing: rebuild with doit build")
        if sha256_file(path) != meta["sha256"]:
            raise ArtifactError(f"{recipe}: {path} does not match the manifest's sha256 (tampered, corrupted or "
                                "rebuilt without the manifest): rebuild with doit build")
    io = entry.get("io")
    if not io:
        raise ArtifactError(f"{recipe}: the manifest has no input/output description (io): rebuild with doit build")
    dtypes = {n: spec["dtype"] for n, spec in io["inputs"].items()}
    device = artifact_device(folder, "cuda" if target.startswith("cuda-") else "cpu")
    runner = load_backend(backend, folder, tuple(io["outputs"]), dtypes, device=device, threads=threads)
    return Model(recipe, target, backend, io, runner)
