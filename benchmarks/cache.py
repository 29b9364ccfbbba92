"""Cold build vs warm-cache build on a fresh clone, for the example recipes.

    python benchmarks/cache.py [--registry HOST:PORT]

Builds the examples from nothing in one folder with an empty local cache (cold), then in a second fresh
folder against the cache the first one filled (warm), and prints both wall times and their ratio. With
--registry, the same through an OCI registry cache (oci:HOST:PORT/infbuild/bench-cache).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import example_project


def build(folder: Path, cache: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "doit", "build"], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "INFBUILD_CACHE": cache})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    summary = re.findall(r"^infbuild: .*$", done.stdout, flags=re.M)
    return seconds, summary[-1] if summary else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", help="also measure an OCI registry cache at HOST:PORT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="infbuild-cache-bench-") as tmp:
        root = Path(tmp)
        caches = [("local", f"local:{root / 'cache'}")]
        if args.registry:
            caches.append(("oci registry", f"oci:{args.registry}/infbuild/bench-{uuid.uuid4().hex[:8]}#rw"))
        rows = []
        for label, cache in caches:
            print(f"[{label}] cold build (empty cache) ...", flush=True)
            cold, cold_summary = build(example_project(root / f"{label}-cold".replace(" ", "-")), cache)
            print(f"[{label}] warm build on a fresh clone ...", flush=True)
            warm, warm_summary = build(example_project(root / f"{label}-warm".replace(" ", "-")), cache)
            rows.append((label, cold, warm, cold_summary, warm_summary))
    print("\n| cache | cold build s | warm-cache fresh clone s | cold / warm |")
    print("|---|---:|---:|---:|")
    for label, cold, warm, _, _ in rows:
        print(f"| {label} | {cold:.1f} | {warm:.1f} | {cold / warm:.1f}x |")
    for label, _, _, cold_summary, warm_summary in rows:
        print(f"\n{label}: cold: {cold_summary}\n{label}: warm: {warm_summary}")


if __name__ == "__main__":
    main()
