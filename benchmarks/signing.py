"""What signing costs on a BERT-base-sized artifact: a stage folder with a 440 MB file (random bytes, like fp32
weights), timed side by side in one run:

    python benchmarks/signing.py [--mb 440]

- hash: sha256 of the files, which every commit does anyway (the stamp);
- sign: the stage's model-signing bundle from the stamped digests (no re-read);
- check (restore): a cache entry's signature against the stamp, before any byte is fetched;
- check (load): what `infbuild.runtime.load` does with trusted keys: re-hash every file and check the signature;
- model_signing CLI: the OpenSSF tool verifying the folder on its own (it re-hashes too).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu
from infbuild.artifacts import list_files
from infbuild.signing import stage_signature
from infbuild.signing.dsse import SigningKey
from infbuild.stamp import Stamp, rehash_problems


def timed(what: str, call, rows: list[tuple[str, float]]) -> object:
    started = time.perf_counter()
    value = call()
    rows.append((what, time.perf_counter() - started))
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=440)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "onnx"
        folder.mkdir()
        with open(folder / "model.onnx.data", "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        (folder / "model.onnx").write_bytes(os.urandom(200_000))
        key = SigningKey.generate("bench")
        public = key.public
        pub_path = Path(tmp) / "k.pub"
        pub_path.write_bytes(public.pem())
        rows: list[tuple[str, float]] = []
        files = timed("hash (every commit, already)", lambda: list_files(folder), rows)
        stamp = Stamp("0" * 64, "onnx", "bert", target="portable", files=files)  # type: ignore[arg-type]
        bundle = timed("sign from the stamp's digests", lambda: stage_signature.sign(key, stamp), rows)
        stage_signature.write(folder, bundle)  # type: ignore[arg-type]
        timed("check a cache entry's signature", lambda: stage_signature.check(bundle, {public.id: public}, stamp), rows)
        timed("check on load (re-hash + signature)",
              lambda: (rehash_problems(folder, stamp), stage_signature.problem(folder, stamp, {public.id: public})), rows)
        cli = Path(sys.executable).with_name("model_signing")
        if cli.exists():
            timed("model_signing verify (CLI, re-hashes)", lambda: subprocess.run(
                [str(cli), "verify", "key", str(folder), "--signature", str(folder / "stage.sig"), "--public_key",
                 str(pub_path)], check=True, capture_output=True), rows)
    base = rows[0][1]
    print(f"{args.mb} MB artifact, CPU: {cpu()}")
    print("| step | seconds | x the sha256 a commit already does |\n|---|---:|---:|")
    for what, seconds in rows:
        print(f"| {what} | {seconds:.3f} | {seconds / base:.3f} |")



if __name__ == "__main__":
    main()
