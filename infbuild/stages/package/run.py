"""package stage: the target's verified artifacts in a container image, by the Docker engine or daemonless."""
from __future__ import annotations

import json
from typing import Any

from ...package import contents, engine, oci, serve
from ...package.reference import parse
from ...package.registry import credentials_from_env
from ...stamp import read_stamp
from ..request import Job
from ..triton import REPOSITORY


def run(job: Job) -> None:
    recipe, root, out, upstream, target = job.recipe, job.root, job.out, job.upstream, job.target
    data = recipe.to_dict()
    options = data["package"]
    serves = "triton" in upstream  # package.serve: triton
    chosen = contents.selection(data, upstream, include=data["triton"]["artifacts"] if serves else None)
    verified = read_stamp(upstream["verify"])
    fingerprint = verified.fingerprint if verified else {}
    io = {"inputs": data["inputs"], "dims": data["dims"], "outputs": data["outputs"]}
    env, cmd = None, None
    if serves:
        files = {**serve.repository_files(upstream["triton"], REPOSITORY), **serve.python_files()}
        env, cmd = serve.ENV, serve.CMD
    else:
        files = contents.image_files(data, target, upstream, chosen, io, fingerprint, contents.bench_settings(upstream))
    labels = contents.labels(data, target, chosen, fingerprint, contents.git_revision(root))
    if serves:
        labels["dev.infbuild.serve"] = "triton"
    reference = f"{options['image']}:{options['version']}-{target}"
    base = options["base"]["cuda" if target.startswith("cuda-") else "cpu"]
    credentials = credentials_from_env(options.get("registry"))
    payload = sum(len(v) if isinstance(v, bytes) else v.stat().st_size for v in files.values())
    print(f"[package] {reference}: {len(files)} files, {payload / 1e6:.2f} MB of artifacts "
          f"({', '.join(chosen['artifacts'])}) on {base}, builder {options['builder']}", flush=True)
    info: dict[str, Any] = {"reference": reference, "builder": options["builder"], "base": base, "labels": labels,
                            "files": sorted(files), "pushed": bool(options["push"])}
    if options["builder"] == "docker":
        result = engine.build(files, labels, base, reference, options["dockerfile"], options["push"], credentials,
                              log=lambda line: print(line, flush=True), env=env, cmd=cmd)
        (out / "Dockerfile").write_text(result.pop("dockerfile"), encoding="utf-8")
        info.update(digest=result["id"], size=result["size"], repo_digests=result.get("repo_digests", []))
    else:
        annotations = {k: v for k, v in labels.items() if k.startswith("org.opencontainers.")}
        image = oci.assemble(base, files, labels, annotations, credentials, env, cmd)
        info.update(digest=image.digest, size=image.size, base_digest=image.base_digest, layer_size=len(image.layer))
        if options["oci_layout"]:
            oci.write_layout(image, out / "oci", f"{options['version']}-{target}", credentials)
            print(f"[package] wrote OCI layout {out.name}/oci (tag {options['version']}-{target})", flush=True)
        if options["push"]:
            client = oci.push(image, parse(reference), credentials, credentials)
            info.update(uploaded_bytes=client.uploaded_bytes, uploaded_blobs=client.uploaded_blobs)
            print(f"[package] pushed {reference}@{image.digest} ({client.uploaded_bytes} bytes uploaded)", flush=True)
    (out / "image.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"[package] {reference}: {info['digest']} ({info['size']} bytes)", flush=True)
