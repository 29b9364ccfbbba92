"""trtexec: finding it, reading its TensorRT version, and the argv of the two TensorRT stages.

Built from trtexec's documented flags for TensorRT 10.x and 11.x (see README: no real engine has been
built by these tests; they run a stand-in that checks argv). Nothing goes through a shell.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from .errors import FieldError
from .recipe import Recipe
from .tool_cache import cached, stat_key

WELL_KNOWN = ("/usr/src/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")
PRECISION_FLAGS = {"fp16": "--fp16", "bf16": "--bf16", "int8": "--int8", "fp8": "--fp8", "best": "--best"}
_BANNER = re.compile(r"\[TensorRT v(\d+)\]")
_VERSION_LINE = re.compile(r"TensorRT version:\s*(\d+)\.(\d+)\.(\d+)")


def locate(explicit: str | None = None, root: Path | None = None) -> Path | None:
    """Recipe/CLI path, then $TRTEXEC, then PATH, then the usual install locations."""
    candidates: list[str | None] = [explicit, os.environ.get("TRTEXEC"), shutil.which("trtexec"), *WELL_KNOWN]
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate)
        if root is not None and not path.is_absolute():
            path = root / path
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    return None


def parse_version(output: str) -> str | None:
    """TensorRT version from trtexec's banner: [TensorRT v100300] = 10.3.0, [TensorRT v8601] = 8.6.1."""
    match = _VERSION_LINE.search(output)
    if match:
        return ".".join(match.groups())
    match = _BANNER.search(output)
    if not match:
        return None
    code = int(match.group(1))
    if code >= 10000:  # TensorRT 10+: major * 10000 + minor * 100 + patch
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return f"{code // 1000}.{code // 100 % 10}.{code % 100}"  # TensorRT 8.x: major * 1000 + minor * 100 + patch


_LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)", re.M)


def resolved_libraries(path: Path) -> list[str]:
    """The shared libraries the dynamic loader resolves for ``path`` right now (``ldd``), each as
    ``name=>file|size|mtime``: another LD_LIBRARY_PATH, or a tar install beside a deb one, changes this even
    when the trtexec binary is the same file. Empty for a static binary or a script."""
    try:
        done = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30, check=False,
                              env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for name, file in _LDD_LINE.findall(done.stdout):
        try:
            st = os.stat(file)
        except OSError:
            continue
        found.append(f"{name}=>{os.path.realpath(file)}|{st.st_size}|{st.st_mtime_ns}")
    return sorted(found)


@lru_cache(maxsize=8)
def version(path: Path) -> str | None:
    """TensorRT version of a trtexec binary, cached on disk by the binary's (path, size, mtime) and the libraries
    the loader resolves for it (its TensorRT version lives in libnvinfer): no-op builds don't run it."""
    key = stat_key(path) + "|" + ";".join(resolved_libraries(path))

    def banner() -> str | None:
        try:
            done = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return parse_version(done.stdout + done.stderr)

    return cached("trtexec-versions", key, banner)


def major(trt_version: str) -> int:
    return int(trt_version.split(".")[0])


def shape_flags(recipe: Recipe) -> list[str]:
    """--minShapes/--optShapes/--maxShapes for every input, from the recipe's named dims."""
    flags = []
    for which, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
        specs = []
        for spec in recipe.inputs:
            shape = spec.concrete(recipe.dims, which)
            specs.append(f"{spec.name}:{'x'.join(str(s) for s in shape)}" if shape else f"{spec.name}:scalar")
        flags.append(f"{flag}={','.join(specs)}")
    return flags


def builder_flags(recipe: Recipe, trt_version: str) -> list[str]:
    """Flags that change which tactics the builder picks (shared by the timing cache and the engine)."""
    options = recipe.stages["tensorrt"]
    flags = []
    if options["builder_optimization_level"] is not None:
        flags.append(f"--builderOptimizationLevel={options['builder_optimization_level']}")
    if options["workspace_mib"] is not None:
        flags.append(f"--memPoolSize=workspace:{options['workspace_mib']}M")
    if options["hardware_compatibility_level"] != "none":
        flags.append(f"--hardwareCompatibilityLevel={options['hardware_compatibility_level']}")
    if options["version_compatible"]:
        flags.append("--versionCompatible")
    if options["sparsity"] != "disable":
        flags.append(f"--sparsity={options['sparsity']}")
    if options["precision"]:
        if major(trt_version) >= 11:
            raise FieldError("stages.tensorrt.precision", (
                f"TensorRT {trt_version} removed the builder precision flags "
                f"({', '.join(PRECISION_FLAGS[p] for p in options['precision'])}): networks are strongly typed. "
                "Set model.dtype: float16 or bfloat16 (or quantize the ONNX with ModelOpt) instead"))
        flags += [PRECISION_FLAGS[p] for p in options["precision"]]
    if options["strongly_typed"] and major(trt_version) < 11:  # always on, and the flag a no-op, in 11
        flags.append("--stronglyTyped")
    for arg in options["extra_args"]:
        if major(trt_version) >= 11 and arg.split("=")[0] in PRECISION_FLAGS.values():
            raise FieldError("stages.tensorrt.extra_args", f"{arg} does not exist in TensorRT {trt_version}: "
                             "networks are strongly typed; set model.dtype instead")
    return flags + list(options["extra_args"])


def reduced_precision(trt_version: str, precision: str) -> tuple[bool, tuple[str, ...]]:
    """How TensorRT builds a reduced-precision engine: (from the reduced-precision ONNX graph?, builder flags).
    TensorRT 11 takes precision only from a strongly typed graph (the fp16 ONNX, no flag); TensorRT 10 builds the
    fp32 graph with the builder precision flag (``--fp16``), letting tactics run in half precision."""
    if major(trt_version) >= 11:
        return True, ()
    return False, (PRECISION_FLAGS[precision],)


def timing_cache_argv(trtexec: Path, recipe: Recipe, trt_version: str, *, onnx: Path, cache: Path) -> list[str]:
    """Build once to fill a timing cache; no engine saved, no inference run."""
    return [str(trtexec), f"--onnx={onnx}", f"--timingCacheFile={cache}", *shape_flags(recipe),
            *builder_flags(recipe, trt_version), "--skipInference"]


def engine_argv(trtexec: Path, recipe: Recipe, trt_version: str, *, onnx: Path, cache: Path, out: Path,
                extra: tuple[str, ...] = ()) -> list[str]:
    """Build the engine with the target's timing cache, profile it, export layer info, profile and times."""
    return [str(trtexec), f"--onnx={onnx}", f"--saveEngine={out / 'model.engine'}", f"--timingCacheFile={cache}",
            *shape_flags(recipe), *builder_flags(recipe, trt_version), *extra, "--separateProfileRun",
            "--profilingVerbosity=detailed", f"--exportLayerInfo={out / 'layers.json'}",
            f"--exportProfile={out / 'profile.json'}", f"--exportTimes={out / 'times.json'}"]


def run(argv: list[str], log_path: Path, tail_lines: int = 30) -> None:
    """Run trtexec, streaming its output to stdout and the log; raise StageFailed with the tail on failure."""
    from collections import deque

    from .errors import StageFailed

    tail: deque[str] = deque(maxlen=tail_lines)
    print("[trtexec] " + " ".join(argv), flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(argv) + "\n")
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as exc:
            raise StageFailed(f"cannot run {argv[0]}: {exc}") from None
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip("\n"))
            print(line, end="", flush=True)
        code = proc.wait()
    if code != 0:
        shown = "\n".join(f"  | {line}" for line in tail)
        raise StageFailed(f"trtexec failed (exit {code}); last lines:\n{shown}")
