"""infbuild.runtime.load: the manifest's artifact for this host, checked, loaded, with validated inputs.

It refuses an artifact built for another target (the failure TensorRT and -march=native users hit most)
with both fingerprints and the command that builds a matching one; ``allow_target_mismatch`` overrides it,
loudly.
"""
from __future__ import annotations

import json
import operator
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .. import settings, verified
from .. import stage as registry
from ..artifacts import stage_dir
from ..errors import ArtifactError, InputError
from ..fingerprint import cpu_target, host_fingerprint, selected_gpu
from ..hashing import sha256_file
from ..reports import REPORT
from ..signing.trust import required_keys
from ..stamp import Stamp, read_stamp, stamp_problem
from ..verified import signature_problem

if TYPE_CHECKING:
    from ..signing.dsse import PublicKey
from ..runner import Runner
from .backends import NUMPY_DTYPES, load_backend, to_numpy


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


class Model:
    """A loaded artifact: call with keyword arrays named after the recipe's inputs; get {output: array}.

    Every call is checked (names, dtypes, ranks, each dim against the recipe's min..max and bound consistently,
    NaN/inf) at a cost of microseconds: the shape checks run once per distinct set of input shapes and dtypes
    (remembered, up to ``SHAPES_REMEMBERED``), the finiteness check is one float64 sum per float input (NaN and
    infinities survive a sum; finite float32/float16 values cannot overflow it), and numpy arrays pass through
    without a copy (a strided one is made contiguous by the runner)."""

    SHAPES_REMEMBERED = 256

    def __init__(self, recipe: str, target: str, backend: str, io: dict[str, Any], runner: Runner,
                 check_finite: bool = True) -> None:
        self.recipe, self.target, self.backend = recipe, target, backend
        self.inputs: dict[str, Any] = io["inputs"]
        self.dims: dict[str, Any] = io["dims"] or {}
        self.outputs: list[str] = io["outputs"]
        self.runner = runner
        self.check_finite = check_finite
        self._names = self.inputs.keys()
        self._dtypes = {name: np.dtype(NUMPY_DTYPES[spec["dtype"]]) for name, spec in self.inputs.items()}
        self._floats = [n for n, dtype in self._dtypes.items() if dtype.kind == "f"]
        # Per order the caller names the inputs in: the (shape, dtype) of each, seen valid in that order (numpy
        # arrays only; up to SHAPES_REMEMBERED in all). A tensor's dtype never equals numpy's: it is checked anew.
        self._seen: dict[tuple[str, ...], set[tuple[tuple[tuple[int, ...], np.dtype[Any]], ...]]] = {}
        self._remembered = 0

    def __repr__(self) -> str:
        return f"<infbuild Model {self.recipe} {self.backend} on {self.target}>"

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        return self.runner(self.validate(inputs))

    def validate(self, given: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The inputs as numpy arrays the runner takes, or an InputError naming what is wrong."""
        # The fast path, in as few steps as possible (after a model call the interpreter runs from cold caches:
        # each step costs several times what it does in a loop): numpy arrays named in the recipe's order, of its
        # dtypes, at shapes seen valid before: only NaN/inf is left to check.
        known = self._seen.get(tuple(given))
        try:  # one C-level map, no Python frame: (shape, dtype) of each input
            seen = known is not None and tuple(map(_SHAPE_DTYPE, given.values())) in known
        except (AttributeError, TypeError):  # not arrays (lists, objects without a hashable shape): the slow path
            seen = False
        if seen:
            arrays = given if isinstance(given, dict) else dict(given)
        else:
            arrays = self._checked_arrays(given)
            if self._remembered < self.SHAPES_REMEMBERED and all(isinstance(v, np.ndarray) for v in given.values()):
                seen_here = self._seen.setdefault(tuple(given), set())
                key = tuple(map(_SHAPE_DTYPE, (arrays[name] for name in given)))  # in the caller's order
                self._remembered += key not in seen_here
                seen_here.add(key)
        if self.check_finite:
            for name in self._floats:
                if not np.isfinite(arrays[name].sum(dtype=np.float64)):
                    raise InputError(f"{self.recipe}: input {name} holds NaN or infinite values "
                                     "(load(..., check_finite=False) to allow them)")
        return arrays

    def _checked_arrays(self, given: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if given.keys() != self._names:
            self._names_problem(given)
        arrays = {name: _as_array(self.recipe, name, given[name]) for name in self._names}
        self._check_shapes(arrays)
        return arrays

    def _names_problem(self, given: Mapping[str, Any]) -> None:
        missing = [n for n in self.inputs if n not in given]
        unknown = [n for n in given if n not in self.inputs]
        raise InputError(f"{self.recipe}: inputs must be {', '.join(self.inputs)}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unknown {', '.join(unknown)}" if unknown else ""))

    def _check_shapes(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Each input's dtype and rank, its fixed axes, its named dims within min..max and equal wherever a name
        recurs (the slow path: once per new set of shapes)."""
        bound: dict[str, tuple[int, str]] = {}
        for name, spec in self.inputs.items():
            array = arrays[name]
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



def _as_array(recipe: str, name: str, value: Any) -> np.ndarray:
    """An input as a numpy array (torch tensors included); a ragged or non-numeric value is an InputError."""
    if hasattr(value, "detach"):  # a torch tensor
        value = to_numpy(value)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{recipe}: input {name} is not an array ({str(exc).splitlines()[0][:200]})") from None
    if array.dtype == object:
        raise InputError(f"{recipe}: input {name} is not a numeric array (ragged nesting or mixed types)")
    return array


_SHAPE_DTYPE = operator.attrgetter("shape", "dtype")

REPAIR = "rewrite it from the stamps with: doit build (or infbuild verify-artifacts --fix)"


def _manifest(path: Path) -> tuple[dict[str, Any], Path]:
    manifest_path = path if path.is_file() else path / "manifest.json"
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"no manifest at {manifest_path}: build first (doit build)") from None
    except OSError as exc:
        raise ArtifactError(f"{manifest_path} cannot be read ({exc.strerror or exc}): {REPAIR}") from None
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({str(exc)[:100]}): {REPAIR}") from None
    if not isinstance(data, dict) or not isinstance(data.get("recipes"), dict):
        raise ArtifactError(f"{manifest_path} is damaged (no 'recipes' object): {REPAIR}")
    return data, manifest_path.parent


def _obj(value: Any, where: str, root: Path) -> dict[str, Any]:
    """A manifest field that must be an object, else an ArtifactError naming the damaged field."""
    if not isinstance(value, dict):
        raise ArtifactError(f"{root / 'manifest.json'} is damaged ({where} is not an object): {REPAIR}")
    return value


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


def _io(stamp: Stamp, listed_io: Any, recipe: str, root: Path) -> dict[str, Any]:
    """Input names, dtypes, shapes and dim bounds from the stamped build (what the artifact was built for), the
    output names from the stamp too where it records them; checked so that a damaged index cannot get through."""
    built = (stamp.inputs or {}).get("recipe") or {}
    io = {**_obj(listed_io or {}, f"recipes.{recipe}.io", root), **{k: built[k] for k in ("inputs", "dims", "outputs")
                                                                    if k in built}}
    try:
        inputs, dims, outputs = _obj(io["inputs"], "io.inputs", root), _obj(io.get("dims") or {}, "io.dims", root), io["outputs"]
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
    manifest, root = _manifest(Path(artifacts))
    trusted = required_keys(root, trusted_keys)
    entry = _recipe_entry(manifest, recipe, root)
    targets = _obj(entry.get("targets") or {}, f"recipes.{recipe}.targets", root)
    host = host_fingerprint()
    target = _choose_target(recipe, targets, target, host, allow_target_mismatch)
    here = _obj(targets[target], f"recipes.{recipe}.targets.{target}", root)
    # Called from load itself: its warning's stacklevel=3 points at load's caller.
    _check_target(recipe, target, here.get("fingerprint"), host, allow_target_mismatch)
    backend = _choose_backend(root, recipe, target, here, backend)
    stage = registry.artifacts()[backend].name
    stage_target = _stage_target(recipe, targets, target, stage)
    stamp = _stamped(root, recipe, stage_target, stage, targets[stage_target]["stages"][stage], trusted)
    _check_verified(root, recipe, target, stage, stamp, backend, trusted)
    io = _io(stamp, entry.get("io"), recipe, root)
    if threads is None:  # the settings bench measured with (its thread count), unless the caller sets its own
        threads = _bench_threads(here)
    runner = _runner(backend, root / recipe / stage_target / stage, io, target, threads, _bench_runtime(here))
    return Model(recipe, target, backend, io, runner, check_finite)


def _bench_runtime(here: dict[str, Any]) -> dict[str, Any]:
    """The session settings bench timed with (the recipe's ``runtime``, per backend)."""
    bench: dict[str, Any] = here["bench"] if isinstance(here.get("bench"), dict) else {}
    runtime: dict[str, Any] = bench["runtime"] if isinstance(bench.get("runtime"), dict) else {}
    return runtime


def _bench_threads(here: dict[str, Any]) -> int | None:
    threads = (here.get("bench") or {}).get("threads") if isinstance(here.get("bench"), dict) else None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else None


def _recipe_entry(manifest: dict[str, Any], recipe: str, root: Path) -> dict[str, Any]:
    """The manifest's entry for ``recipe``."""
    entry = manifest["recipes"].get(recipe)
    if entry is None:
        known = ", ".join(sorted(manifest["recipes"])) or "none"
        raise ArtifactError(f"no recipe '{recipe}' in {root / 'manifest.json'} (built: {known})")
    return _obj(entry, f"recipes.{recipe}", root)


def _choose_target(recipe: str, targets: dict[str, Any], target: str | None, host: dict[str, Any],
                   allow_target_mismatch: bool) -> str:
    """The target asked for, else this host's; either way one the manifest lists."""
    target = target or _host_target(recipe, targets, host, allow_target_mismatch)
    if target not in targets:
        raise ArtifactError(f"{recipe}: no target {target} in the manifest (built: {', '.join(sorted(targets))})")
    return target


def _choose_backend(root: Path, recipe: str, target: str, here: dict[str, Any], backend: str | None) -> str:
    """The backend asked for, else the target's preferred one; a known backend the recipe was built for."""
    backend = backend or here.get("preferred")
    if backend is None:
        raise ArtifactError(f"{recipe}: no artifact passed verification on {target}; see "
                            f"{root / recipe / target / registry.judge().name / REPORT}")
    by_backend = registry.artifacts()
    if backend not in by_backend:
        raise ArtifactError(f"{recipe}: unknown backend '{backend}' (known: {', '.join(by_backend)})")
    built_with = list(_obj(here.get("verify") or {}, "verify", root))
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


def _stage_target(recipe: str, targets: dict[str, Any], target: str, stage: str) -> str:
    """The target folder holding the artifact stage's output: ``target``'s own, else the portable one."""
    stage_target = next((t for t in (target, "portable")
                         if isinstance(targets.get(t), dict) and stage in (targets[t].get("stages") or {})), None)
    if stage_target is None:
        raise ArtifactError(f"{recipe}: the manifest lists no {stage} stage for {target}")
    return stage_target


def _runner(backend: str, folder: Path, io: dict[str, Any], target: str, threads: int | None,
            runtime: dict[str, Any]) -> Runner:
    """The backend's runner over the artifact folder, on the device the artifact was built for."""
    dtypes = {n: spec["dtype"] for n, spec in io["inputs"].items()}
    device = "cuda" if target.startswith("cuda-") else "cpu"
    return load_backend(backend, folder, tuple(io["outputs"]), dtypes, device=device, threads=threads, runtime=runtime)


def _host_target(recipe: str, targets: dict[str, Any], host: dict[str, Any], allow_target_mismatch: bool) -> str:
    """This host's target among those built (its GPU's first, then its CPU's)."""
    mine = [t for t in (host["targets"].get("cuda"), host["targets"]["cpu"]) if t and t in targets]
    built = sorted(t for t in targets if t != "portable")
    if not mine:
        if not (allow_target_mismatch and built):
            here = "; ".join(_summary(host, t) for t in (host["targets"].get("cuda"), host["targets"]["cpu"]) if t)
            there = "; ".join(_summary((targets[t] or {}).get("fingerprint") if isinstance(targets[t], dict) else None, t)
                              for t in built) or "nothing"
            raise ArtifactError(f"{recipe}: no artifacts for this host ({here}); built for: {there}. "
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
