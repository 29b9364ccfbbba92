"""Memory of moving a big artifact through the caches: a stage folder with a generated file (default 1 GiB, random
bytes like fp32 weights) stored into and restored from a local cache and an OCI registry cache, each operation in a
fresh process, its peak resident memory (VmHWM) reported above that process's baseline (after its imports):

    python benchmarks/streaming.py [--mb 1024] [--registry HOST:PORT] [--json]

Without --registry, a registry is started on loopback (Debian's docker-registry) for the run. The target: at most
100 MB above the baseline for every operation, whatever the artifact's size (one chunk in memory, not the file).
Also printed: how the local restore placed the file (reflink, hardlink or copy) and the seconds each step took.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu

TARGET_MB = 100
KEY = "ab" * 32

PROBE = r"""
import json, os, sys, time
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from infbuild import stage as registry
from infbuild.cache import Wanted, restore, store
from infbuild.cache.config import configured_caches


def hwm_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


op, spec, folder, stamp_path = sys.argv[2:6]
stamp = json.loads(Path(stamp_path).read_text())
caches = configured_caches(Path(folder).parent, [spec])
baseline = hwm_kb()
started = time.perf_counter()
if op == "store":
    written = store(caches, stamp["key"], stamp, Path(folder)).written
    assert written, "nothing stored"
else:
    staging = Path(folder)
    staging.mkdir()
    outputs = registry.get(stamp["stage"]).outputs
    outcome = restore(caches, Wanted(stamp["key"], stamp["stage"], stamp["recipe"], stamp["target"], outputs), staging)
    assert outcome is not None, "not restored"
seconds = time.perf_counter() - started
placed = getattr(caches[0], "placed", {}).get("model.onnx.data", "streamed")
print(json.dumps({"baseline_mb": baseline / 1024, "peak_above_mb": (hwm_kb() - baseline) / 1024, "seconds": seconds,
                  **({"placed": placed} if op == "restore" else {})}))
"""


def make_stage(folder: Path, mb: int) -> dict[str, Any]:
    """An onnx stage folder with a ``model.onnx.data`` of ``mb`` MiB, and its stamp."""
    import hashlib

    folder.mkdir(parents=True)
    files: dict[str, Any] = {}
    for name, size in (("model.onnx", 1 << 10), ("export.json", 64), ("model.onnx.data", mb << 20)):
        h = hashlib.sha256()
        with open(folder / name, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 16 << 20))
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        files[name] = {"sha256": h.hexdigest(), "size": size}
    return {"key": KEY, "stage": "onnx", "recipe": "big", "target": "portable", "files": files, "fingerprint": {}}


def probe(op: str, spec: str, folder: Path, stamp: Path) -> dict[str, float]:
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "INFBUILD_INSECURE_REGISTRY": os.environ.get("INFBUILD_INSECURE_REGISTRY", "")}
    done = subprocess.run([sys.executable, "-c", PROBE, repo, op, spec, str(folder), str(stamp)], capture_output=True,
                          text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{op} {spec} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_registry(root: Path) -> tuple[subprocess.Popen, str]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    (root / "config.yml").write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: "
                                     f"{root / 'data'}\nhttp:\n  addr: {address}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            if urllib.request.urlopen(f"http://{address}/v2/", timeout=1).status == 200:
                return proc, address
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("docker-registry did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--registry", help="HOST:PORT of a registry (plain HTTP); default: start one on loopback")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="infbuild-streaming-") as tmp_s:
        tmp = Path(tmp_s)
        server = None
        if args.registry:
            address = args.registry
        else:
            (tmp / "registry").mkdir()
            server, address = start_registry(tmp / "registry")
        os.environ["INFBUILD_INSECURE_REGISTRY"] = address.split("/")[0]
        try:
            stamp = make_stage(tmp / "stage", args.mb)
            (tmp / "stamp.json").write_text(json.dumps(stamp))
            rows: dict[str, dict[str, Any]] = {}
            local = f"local:{tmp / 'cache'}"
            oci = f"oci:{address}/infbuild/streaming-bench#rw"
            rows["local store"] = probe("store", local, tmp / "stage", tmp / "stamp.json")
            rows["local restore"] = probe("restore", local, tmp / "restored-local", tmp / "stamp.json")
            rows["registry store"] = probe("store", oci, tmp / "stage", tmp / "stamp.json")
            rows["registry restore"] = probe("restore", oci, tmp / "restored-oci", tmp / "stamp.json")
        finally:
            if server is not None:
                server.terminate()
                server.wait(10)
            shutil.rmtree(tmp / "cache", ignore_errors=True)
    figures = {"mb": args.mb, "cpu": cpu(), "target_mb": TARGET_MB, "operations": rows,
               "bounded": all(r["peak_above_mb"] <= TARGET_MB for r in rows.values())}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"moving a {args.mb} MiB artifact ({cpu()}); peak memory above each process's baseline")
        print(f"{'operation':<18} {'peak above baseline MB':>24} {'seconds':>9}  note")
        for name, r in rows.items():
            print(f"{name:<18} {r['peak_above_mb']:>24.1f} {r['seconds']:>9.2f}  {r.get('placed', '')}")
        print(f"target: <= {TARGET_MB} MB above the baseline for every operation: "
              f"{'met' if figures['bounded'] else 'NOT met'}")
    return 0 if figures["bounded"] else 1


if __name__ == "__main__":
    sys.exit(main())
