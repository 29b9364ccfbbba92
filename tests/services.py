"""Real services for the packaging tests, on loopback, started and stopped by fixtures: a Docker engine
(vfs storage, no iptables/bridge, its own data root and socket) and OCI registries (Debian's docker-registry)."""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

NEEDED = ("dockerd", "docker-registry", "busybox", "umoci", "skopeo")


def require_binaries() -> None:
    missing = [b for b in NEEDED if shutil.which(b) is None]
    if missing:
        message = f"packaging tests need {', '.join(missing)} (Debian: docker.io docker-registry busybox-static umoci skopeo)"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run must install them")
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up in {timeout}s")


def stop_process(proc: subprocess.Popen, log: "object", timeout: float) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()  # type: ignore[attr-defined]


class Dockerd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.log = open(root / "dockerd.log", "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--ip-masq=false", f"--data-root={root / 'data'}", f"--exec-root={root / 'exec'}",
             f"--pidfile={root / 'docker.pid'}", "-H", self.host],
            stdout=self.log, stderr=subprocess.STDOUT)
        import docker

        wait_for(lambda: docker.DockerClient(base_url=self.host).ping(), "dockerd")
        self.client = docker.DockerClient(base_url=self.host, timeout=300)

    def stop(self) -> None:
        self.client.close()
        stop_process(self.proc, self.log, timeout=20)


class RegistryServer:
    def __init__(self, root: Path, readonly: bool = False) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.yml"
        maintenance = "\n  maintenance:\n    readonly:\n      enabled: true" if readonly else ""
        config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}"
                          f"\n  delete:\n    enabled: true{maintenance}\nhttp:\n  addr: {self.address}\n")
        self.log = open(root / "registry.log", "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2).status == 200, "registry")

    def stop(self) -> None:
        stop_process(self.proc, self.log, timeout=10)


def busybox_rootfs_tar() -> bytes:
    """A minimal rootfs: busybox-static and its applet links (sh, ls, cat, sha256sum)."""
    buffer = io.BytesIO()
    busybox = Path(shutil.which("busybox") or "/bin/busybox").resolve().read_bytes()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in ("bin", "tmp", "opt"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
        for applet in ("sh", "ls", "cat", "sha256sum", "find", "wc"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buffer.getvalue()
