"""Start a local ``tritonserver`` over a generated repository, on loopback ports: the one in the
``nvidia-pytriton`` wheel (``pip install --no-deps nvidia-pytriton``: a real Triton server with the Python
backend; its ONNX Runtime and TensorRT backends are not in the wheel), or a ``tritonserver`` on PATH (a Triton
install or container, backends under /opt/tritonserver/backends).

The wheel's Python backend needs the stub built for this Python copied into ``backends/python/`` (done in a
work folder), and runs it with this environment's packages (its ``bin`` first on PATH)."""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Mapping

from ..errors import InfbuildError
from ..hashing import sha256_file

if TYPE_CHECKING:
    from ..signing.dsse import PublicKey


class ServerError(InfbuildError):
    """No tritonserver to start, or it did not come up."""


@dataclass(frozen=True)
class Installation:
    binary: Path
    backends: Path
    libs: Path | None = None  # the wheel's bundled libraries (LD_LIBRARY_PATH)
    stub: Path | None = None  # the wheel's Python-backend stub for this Python

    def has_backend(self, name: str) -> bool:
        return (self.backends / name).is_dir()


def locate() -> Installation:
    """The nvidia-pytriton wheel's server if installed, else ``tritonserver`` on PATH."""
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
        server = package / "tritonserver"
        stub = server / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
        if (server / "bin" / "tritonserver").is_file():
            return Installation(server / "bin" / "tritonserver", server / "backends", package.parent / "nvidia_pytriton.libs",
                                stub if stub.is_file() else None)
    found = shutil.which("tritonserver")
    if found:
        return Installation(Path(found), Path(os.environ.get("TRITON_BACKENDS", "/opt/tritonserver/backends")))
    raise ServerError("no tritonserver: install the nvidia-pytriton wheel (pip install --no-deps nvidia-pytriton) "
                      "or put Triton's tritonserver on PATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wheel_digests() -> dict[Path, str]:
    """The nvidia-pytriton wheel's files (as installed) -> their sha256 from its RECORD (urlsafe base64, as pip
    checked them at install)."""
    try:
        dist = metadata.distribution("nvidia-pytriton")
    except metadata.PackageNotFoundError:
        return {}
    return {Path(str(dist.locate_file(f))).resolve(): f.hash.value for f in dist.files or []
            if f.hash is not None and f.hash.mode == "sha256"}


def _record_hash(path: Path) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(sha256_file(path))).rstrip(b"=").decode()


def check_executables(install: Installation, copies: dict[Path, Path] | None = None) -> None:
    """Every program the server runs (``tritonserver``, the Python-backend stub, the backend's own files) has the
    digest the wheel's RECORD gives for it: a stub replaced on disk is refused, never run. ``copies``: copy ->
    the wheel file it was copied from (the copies are what runs, so they are what is checked)."""
    if install.stub is None:
        return  # a Triton install or container: its own files, not a wheel's
    digests = wheel_digests()
    checked = {install.binary.resolve(): install.binary, **{src.resolve(): copy for copy, src in (copies or {}).items()}}
    for source, path in checked.items():
        expected = digests.get(source)
        if expected is None:
            raise ServerError(f"{path}: not a file of the nvidia-pytriton wheel's RECORD: refusing to run it")
        if _record_hash(path) != expected:
            raise ServerError(f"{path}: does not match the nvidia-pytriton wheel's RECORD (replaced or corrupted): "
                              "refusing to run it; reinstall the wheel")


def backends_with_stub(install: Installation, work: Path) -> Path:
    """The backends folder with this Python's stub in ``python/``: for the wheel a fresh private copy under
    ``work`` on every start (never one left by an earlier serve), each file checked against the wheel's RECORD."""
    if install.stub is None:
        return install.backends
    for old in work.glob("backends-*"):
        shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="backends-", dir=work))  # mode 0700
    copies: dict[Path, Path] = {}
    for source in sorted(install.backends.rglob("*")):
        if source.is_symlink() or not source.is_file() or "__pycache__" in source.parts:
            continue
        copy = folder / source.relative_to(install.backends)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
        copies[copy] = source
    stub = folder / "python" / "triton_python_backend_stub"
    shutil.copy2(install.stub, stub)
    copies[stub] = install.stub
    check_executables(install, copies)
    return folder


BACKEND_OF = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt", "python": "python"}
"""A config's platform (or backend) -> the backend folder the server needs for it."""


def models_it_can_load(repository: Path, install: Installation) -> tuple[list[str], dict[str, str]]:
    """The repository's models this server has backends for, and why each other one is left out."""
    loadable, left_out = [], {}
    for name, kind in describe(repository).items():
        needed = BACKEND_OF.get(kind, kind)
        if not install.has_backend(needed):
            left_out[name] = f"this tritonserver has no {needed} backend ({install.backends})"
        else:
            loadable.append(name)
    return loadable, left_out


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path
    models: list[str] = field(default_factory=list)  # the models it was told to load
    left_out: dict[str, str] = field(default_factory=dict)
    _log: IO[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def model_ready(self, name: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/models/{name}/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_ready(self, models: list[str], timeout: float = 120) -> None:
        """Until the server is live and every one of ``models`` is ready; a ServerError with the log's tail if not."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            if self._live() and all(self.model_ready(m) for m in models):
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver: {', '.join(models) or 'the server'} not ready after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def _live(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/live", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log:
            self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start(repository: Path, work: Path, *, models: list[str] | None = None, http_port: int | None = None,
          grpc_port: int | None = None, env: dict[str, str] | None = None, install: Installation | None = None) -> Server:
    """``tritonserver`` over ``repository`` on loopback, loading ``models`` (default: every model it has a backend
    for; the others are listed in ``Server.left_out``). Its log goes to ``work/tritonserver.log``."""
    install = install or locate()
    work.mkdir(parents=True, exist_ok=True)
    loadable, left_out = models_it_can_load(repository, install)
    models = loadable if models is None else models
    http_port, grpc_port = http_port or free_port(), grpc_port or free_port()
    argv = [str(install.binary), f"--model-repository={repository}", f"--backend-directory={backends_with_stub(install, work)}",
            f"--http-port={http_port}", f"--grpc-port={grpc_port}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
            "--allow-metrics=false", "--model-control-mode=explicit", "--exit-on-error=false", "--log-info=true",
            *(f"--load-model={m}" for m in models)]
    environment = {**os.environ, **(env or {})}
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment.get('PATH', '')}"  # the stub's Python packages
    if install.libs:  # the wheel's libraries, and this Python's libpython for the stub (where it is a shared build)
        python_lib = sysconfig.get_config_var("LIBDIR") if sysconfig.get_config_var("Py_ENABLE_SHARED") else None
        environment["LD_LIBRARY_PATH"] = ":".join(p for p in (python_lib, environment.get("LD_LIBRARY_PATH"), str(install.libs)) if p)
    log_path = work / "tritonserver.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environment)
    return Server(process, http_port, grpc_port, log_path, models, left_out, log)


def _walk(repository: Path) -> tuple[list[Path], list[str]]:
    """Every regular file under ``repository``, and every entry that is neither a regular file nor a folder: a
    symlink (to a file or a folder: never followed), a FIFO, a socket or a device (never opened). ``__pycache__``
    folders (the Python backend's bytecode, which Python would run in place of the stamped source) are removed on
    the way when they are real folders, and refused when they are links."""
    files: list[Path] = []
    odd: list[str] = []
    for top, dirs, names in os.walk(repository, followlinks=False):
        base = Path(top)
        for name in list(dirs):
            path = base / name
            if path.is_symlink():
                odd.append(f"{path.relative_to(repository)}: a symbolic link")
                dirs.remove(name)
            elif name == "__pycache__":
                shutil.rmtree(path)
                dirs.remove(name)
        for name in names:
            path = base / name
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                files.append(path)
            else:
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
                odd.append(f"{path.relative_to(repository)}: {kind}")
    return files, odd


def check_repository(folder: Path, trusted: Mapping[str, PublicKey] | None = None) -> None:
    """Refuse to serve a triton stage folder whose repository is not exactly what the build stamped: a file that
    differs, is missing, or was slipped in (another model.py would be loaded too); a link, FIFO or special file
    anywhere in it; and, with ``trusted`` keys, a stage not signed by one of them."""
    from ..stamp import read_stamp, rehash_problems
    from ..verified import signature_problem

    repository = folder / "repository"
    if repository.is_symlink() or not repository.is_dir():
        raise ServerError(f"{repository}: not a folder the build wrote: rebuild it with doit build")
    files, problems = _walk(repository)
    stamp = read_stamp(folder)
    if stamp is None:
        problems.append("no valid stamp.json")
    else:
        problems += [f"{p.relative_to(folder)}: not a stamped file" for p in files
                     if p.relative_to(folder).as_posix() not in stamp.files]
        problems += rehash_problems(folder, stamp) if not problems else []
        why = signature_problem(folder, stamp, trusted) if not problems else None
        problems += [why] if why else []
    if problems:
        raise ServerError(f"{folder}: refusing to serve a repository that does not match its stamp ({problems[0]}): "
                          "rebuild it with doit build")


def describe(repository: Path) -> dict[str, Any]:
    """Model name -> the platform or backend its config.pbtxt names (a light read, for messages)."""
    out: dict[str, Any] = {}
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text(encoding="utf-8")
        for line in text.splitlines():
            if line.startswith(("platform:", "backend:")):
                out[config.parent.name] = json.loads(line.split(":", 1)[1].strip())
                break
    return out
