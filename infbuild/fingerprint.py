"""The host's hardware fingerprint and the target slugs artifacts are keyed by (``cpu-<arch>-<isa>``, ``cuda-sm<cc>-<gpu>``).

Read from /proc/cpuinfo, uname, g++ and nvidia-smi without importing torch; no GPU is a normal answer.
``INFBUILD_FINGERPRINT`` (a JSON object, or @path to one) is merged over what is detected: it lets tests
and cross-builds simulate another host.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import stat
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from . import settings
from .errors import ConfigError
from .tool_cache import cached, stat_key

TOOLS = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "tensorrt", "doit", "docker", "infbuild")
# CPU flags that change what a compiler emits with -march=native; part of the cpu-scope key.
_ISA_FLAG = re.compile(r"^(sse\S*|ssse3|avx\S*|fma\S*|f16c|bmi\d|amx\S*|popcnt|lzcnt|abm|movbe|adx|sha_ni|vaes|"
                       r"vpclmulqdq|gfni|asimd\S*|sve\S*|sme\S*|neon|fp16|bf16|i8mm|dotprod)$")
# x86 ISA levels, most capable first: (slug, flags that must all be present).
_X86_LEVELS = (
    ("avx512", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
    ("avx2", {"avx2", "fma", "bmi1", "bmi2", "f16c"}),
    ("avx", {"avx"}),
    ("sse4", {"sse4_2"}),
)


def slug(text: str) -> str:
    """Lowercase, non-alphanumerics folded to single dashes: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cpuinfo() -> tuple[str, list[str]]:
    model = ""
    flags: list[str] = []
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown", []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = value.split()
        if model and flags:
            break
    return model or "unknown", flags


def isa_level(arch: str, flags: set[str]) -> str:
    if arch in ("x86_64", "amd64"):
        for name, needed in _X86_LEVELS:
            if needed <= flags:
                return name
        return "baseline"
    if arch in ("aarch64", "arm64"):
        return "sve" if "sve" in flags else "neon"
    return "generic"


def _run(argv: list[str], timeout: float = 5.0) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _visible_index() -> str | None:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    first = visible.split(",")[0].strip()
    return first or "none"


def gxx_version() -> str | None:
    """The C++ compiler AOTInductor uses, cached by its driver binary (a no-op build starts no compiler)."""
    found = shutil.which("g++")
    if found is None:
        return None
    return cached("compiler-versions", stat_key(Path(found)), lambda: _run(["g++", "-dumpfullversion"]))


def detect_gpus() -> tuple[list[dict[str, Any]], str | None]:
    """GPUs from nvidia-smi (empty when there is none) and the CUDA version the driver supports."""
    out = _run(["nvidia-smi", "--query-gpu=index,uuid,name,compute_cap,driver_version,memory.total",
                "--format=csv,noheader,nounits"])
    if not out:
        return [], None
    gpus = []
    for row in out.strip().splitlines():
        cells = [c.strip() for c in row.split(",")]
        if len(cells) < 6:
            continue
        index, uuid, name, cap, driver, memory = cells[:6]
        major, _, minor = cap.partition(".")
        gpus.append({
            "index": index, "uuid": uuid, "name": name, "compute_capability": cap, "driver": driver,
            "memory_mib": int(float(memory)) if memory.replace(".", "").isdigit() else None,
            "target": f"cuda-sm{major}{minor}-{slug(name)}",
        })
    header = _run(["nvidia-smi"]) or ""
    match = re.search(r"CUDA Version:\s*([\d.]+)", header)
    return gpus, match.group(1) if match else None


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for tool in TOOLS:
        try:
            versions[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            versions[tool] = None
    return versions


def tensorrt_info(explicit: str | None, root: Path | None = None) -> dict[str, Any]:
    """Where trtexec is and which TensorRT it is (from its banner, cached by file stat)."""
    from . import trtexec

    path = trtexec.locate(explicit, root)
    return {"trtexec": str(path) if path else None, "version": trtexec.version(path) if path else None}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


MAX_OVERRIDE_BYTES = 1 << 20


def _read_override_file(path: Path) -> str:
    """An ``@file`` override: a regular file (never a FIFO or device, which would block or never end), bounded."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"INFBUILD_FINGERPRINT=@{path}: not a regular file")
        if st.st_size > MAX_OVERRIDE_BYTES:
            raise ConfigError(f"INFBUILD_FINGERPRINT=@{path}: larger than {MAX_OVERRIDE_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"INFBUILD_FINGERPRINT=@{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None


def _check_override(value: Any, base: Any, where: str) -> None:
    """An override may only replace an object with an object, and holds no control characters (fields become
    messages and paths)."""
    if isinstance(value, str):
        if any(not c.isprintable() for c in value):
            raise ConfigError(f"INFBUILD_FINGERPRINT: {where}: holds a control character")
        return
    if isinstance(base, dict) and not isinstance(value, dict):
        raise ConfigError(f"INFBUILD_FINGERPRINT: {where}: must be an object like the detected one, not {json.dumps(value)[:40]}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_override(key, None, where)
            _check_override(item, base.get(key) if isinstance(base, dict) else None, f"{where}.{key}".lstrip("."))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_override(item, None, f"{where}[{index}]")


def _override(detected: dict[str, Any]) -> dict[str, Any]:
    raw = settings.value("fingerprint")
    if not raw:
        return {}
    text = _read_override_file(Path(raw[1:])) if raw.startswith("@") else raw
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"INFBUILD_FINGERPRINT: not a JSON object ({str(exc)[:100]})") from None
    if not isinstance(value, dict):
        raise ConfigError("INFBUILD_FINGERPRINT: not a JSON object")
    try:
        _check_override(value, detected, "")
    except RecursionError:
        raise ConfigError("INFBUILD_FINGERPRINT: nested too deeply") from None
    return value


def _targets(fp: dict[str, Any]) -> dict[str, str | None]:
    """The host's target slugs, each checked to be a folder name (a simulated host cannot name a path)."""
    from .artifacts import slug_problem

    try:
        targets = {"cpu": cpu_target(fp), "cuda": cuda_target(fp)}
        gpu_targets = [g.get("target") for g in fp.get("gpus") or []]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"INFBUILD_FINGERPRINT: the fingerprint lacks a field targets are made of ({exc})") from None
    for name in [targets["cpu"], *gpu_targets]:
        why = slug_problem(name)
        if why:
            raise ConfigError(f"INFBUILD_FINGERPRINT: the target {why}")
    return targets


@lru_cache(maxsize=1)
def host_fingerprint() -> dict[str, Any]:
    """Everything about this host that artifacts depend on, with derived target slugs."""
    arch = platform.machine()
    model, flags = _cpuinfo()
    gpus, cuda_version = detect_gpus()
    gxx = gxx_version()
    libc = " ".join(platform.libc_ver()).strip() or None
    fp: dict[str, Any] = {
        "cpu": {"arch": arch, "model": model, "isa": isa_level(arch, set(flags)),
                "flags": sorted(f for f in set(flags) if _ISA_FLAG.match(f)), "count": os.cpu_count()},
        "os": {"system": platform.system(), "release": platform.release(), "libc": libc},
        "compiler": {"gxx": gxx.strip() if gxx else None},
        "gpus": gpus,
        "cuda": {"version": cuda_version, "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")},
        "tools": tool_versions(),
    }
    fp["tensorrt"] = tensorrt_info(None)
    fp = _merge(fp, _override(fp))
    fp["targets"] = _targets(fp)
    return fp


def cpu_target(fp: dict[str, Any]) -> str:
    return f"cpu-{fp['cpu']['arch']}-{fp['cpu']['isa']}"


def selected_gpu(fp: dict[str, Any]) -> dict[str, Any] | None:
    """The GPU builds run on: the first one CUDA_VISIBLE_DEVICES selects (index or UUID), else the first."""
    gpus = fp.get("gpus") or []
    wanted = _visible_index()
    if wanted is None:
        return gpus[0] if gpus else None
    for gpu in gpus:
        if wanted in (str(gpu.get("index")), gpu.get("uuid")):
            return gpu
    return None


def cuda_target(fp: dict[str, Any]) -> str | None:
    gpu = selected_gpu(fp)
    return gpu["target"] if gpu else None


def torch_has_cuda(fp: dict[str, Any]) -> bool:
    """Whether the installed torch is a CUDA build (judged from its version, without importing it)."""
    version = fp["tools"].get("torch") or ""
    return bool(version) and "+cpu" not in version


def scope_fields(fp: dict[str, Any], scope: str) -> dict[str, Any]:
    """The part of the fingerprint a stage of this scope depends on (goes into its key), by what it does:

    - ``portable``: nothing of the host;
    - ``cpu``: what a compiler targets (``-march=native`` AOTInductor): arch, ISA level, ISA flags, g++, libc;
    - ``cpu-numerics``: what onnxruntime's CPU kernels depend on (arch, ISA level, ISA flags), not the compiler;
    - ``cuda``: a CUDA AOTInductor compile: the ``cpu`` fields, the GPU, compute capability, CUDA version and the
      driver's major version (a floor: a patch release of the driver changes nothing compiled);
    - ``gpu``: TensorRT: the GPU model, compute capability, CUDA version and driver major, no CPU fields (two H100
      runners on different host CPUs share engines).
    """
    if scope == "portable":
        return {}
    numerics = {"arch": fp["cpu"]["arch"], "isa": fp["cpu"]["isa"], "flags": fp["cpu"]["flags"]}
    if scope == "cpu-numerics":
        return numerics
    cpu = {**numerics, "gxx": fp["compiler"]["gxx"], "libc": fp["os"]["libc"]}
    if scope == "cpu":
        return cpu
    gpu = selected_gpu(fp) or {}
    device = {"gpu": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
              "driver_major": driver_major(gpu.get("driver")), "cuda": fp["cuda"].get("version")}
    return device if scope == "gpu" else {**cpu, **device}


def driver_major(version: Any) -> str | None:
    """``580.159.04`` -> ``580``: the driver floor a build depends on."""
    return str(version).split(".", 1)[0] if version else None


def render(fp: dict[str, Any]) -> str:
    """Human summary for `infbuild fingerprint`."""
    lines = [
        f"cpu      {fp['cpu']['model']} ({fp['cpu']['arch']}, {fp['cpu']['count']} cores, ISA {fp['cpu']['isa']})",
        f"os       {fp['os']['system']} {fp['os']['release']}, {fp['os']['libc'] or 'libc unknown'}",
        f"compiler g++ {fp['compiler']['gxx'] or 'not found'}",
    ]
    if fp["gpus"]:
        for gpu in fp["gpus"]:
            lines.append(f"gpu {gpu['index']}    {gpu['name']} (sm {gpu['compute_capability']}, "
                         f"{gpu['memory_mib']} MiB, driver {gpu['driver']}, CUDA {fp['cuda']['version']})")
    else:
        lines.append("gpu      none (no nvidia-smi or no NVIDIA GPU): CUDA stages are not buildable here")
    trt = fp.get("tensorrt") or {}
    lines.append(f"tensorrt {trt.get('version') or '-'} (trtexec: {trt.get('trtexec') or 'not found'})")
    tools = ", ".join(f"{k} {v}" for k, v in fp["tools"].items() if v)
    lines.append(f"tools    {tools}")
    lines.append(f"targets  cpu: {fp['targets']['cpu']}   cuda: {fp['targets']['cuda'] or '-'}")
    return "\n".join(lines)
