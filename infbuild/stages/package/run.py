"""package stage: the target's verified artifacts in a container image, by the Docker engine or daemonless."""
from __future__ import annotations

import json
import shutil
import time
from typing import Any

from ...package import contents, engine, oci, serve
from ...package.reference import parse
from ...package.registry import Registry, credentials_from_env
from ...signing import image as signed_image
from ...stamp import read_stamp
from ..request import Job
from ..triton import REPOSITORY
from .image_info import ImageInfo

PROVENANCE_FILE = "provenance.sigstore.json"


def run(job: Job) -> None:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
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
        files = {**serve.repository_files(upstream["triton"], REPOSITORY), **serve.python_files(),
                 **serve.repository_stamp(upstream["triton"], recipe.name, target)}
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
        if options["push"]:
            client = Registry(parse(reference), credentials)
            pushed = client.raw_manifest(parse(reference).tag or "latest")
            assert pushed is not None, f"{reference}: not in the registry after the push"
            raw, media_type = pushed
            layers = [layer["digest"] for layer in json.loads(raw)["layers"][result["base_layers"]:]]
            base_digest = next((d.split("@", 1)[1] for d in result["base_digests"] if "@" in d), None)
            subject = signed_image.Subject(parse(reference), oci.sha256(raw), media_type, len(raw))
            info["signed"] = _sign(job, client, subject, layers, base, base_digest, fingerprint=fingerprint, started=started)
    else:
        annotations = {k: v for k, v in labels.items() if k.startswith("org.opencontainers.")}
        scratch = out / ".scratch"  # the layer file, streamed (never whole in memory); removed before the commit
        scratch.mkdir()
        try:
            image = oci.assemble(base, files, labels, annotations, scratch, credentials, env, cmd)
            info.update(digest=image.digest, size=image.size, base_digest=image.base_digest, layer_size=image.layer.size)
            _ship(job, image, info, fingerprint=fingerprint, started=started)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    named = ("reference", "builder", "pushed", "digest", "size")
    ImageInfo(**{k: info[k] for k in named}, details={k: v for k, v in info.items() if k not in named}).write(out)
    print(f"[package] {reference}: {info['digest']} ({info['size']} bytes)", flush=True)


def _ship(job: Job, image: oci.OciImage, info: dict[str, Any], *, fingerprint: dict[str, Any], started: str) -> None:
    """The daemonless builder's image: its OCI layout and its push (then its signature), as the recipe asks."""
    options, out, target, reference = job.recipe.to_dict()["package"], job.out, job.target, info["reference"]
    credentials, base = credentials_from_env(options.get("registry")), info["base"]
    if options["oci_layout"]:
        oci.write_layout(image, out / "oci", f"{options['version']}-{target}", credentials)
        print(f"[package] wrote OCI layout {out.name}/oci (tag {options['version']}-{target})", flush=True)
    if options["push"]:
        client = oci.push(image, parse(reference), credentials, credentials)
        info.update(uploaded_bytes=client.uploaded_bytes, uploaded_blobs=list(client.uploaded_blobs))  # the image only
        print(f"[package] pushed {reference}@{image.digest} ({client.uploaded_bytes} bytes uploaded)", flush=True)
        subject = signed_image.Subject(parse(reference), image.digest, oci.OCI_MANIFEST, len(image.manifest))
        info["signed"] = _sign(job, client, subject, [image.layer.digest], base, image.base_digest,
                               fingerprint=fingerprint, started=started)


def _sign(job: Job, client: Registry, subject: signed_image.Subject, layers: list[str], base: str,
          base_digest: str | None, *, fingerprint: dict[str, Any], started: str) -> dict[str, Any] | None:
    """Sign the pushed image and attach its provenance (when the build has a signing key); what was attached."""
    data, upstream = job.recipe.to_dict(), job.upstream
    key = job.signer()
    if key is None:
        print(f"[package] {subject.ref}: not signed (the build has no signing key)", flush=True)
        return None
    stage_keys = {name: stamp.key for name, folder in sorted(upstream.items()) if (stamp := read_stamp(folder))}
    statement = signed_image.provenance(
        subject, recipe=data, target=job.target, builder=data["package"]["builder"], stage_keys=stage_keys,
        revision=contents.git_revision(job.root), source=data["package"].get("source"), fingerprint=fingerprint,
        base=base, base_digest=base_digest, layers=layers, started=started)
    signed = signed_image.sign_image(client, subject, key, statement)
    (job.out / PROVENANCE_FILE).write_text(json.dumps(key.bundle(oci.canonical(statement)), indent=2) + "\n",
                                       encoding="utf-8")
    print(f"[package] signed {subject.ref}@{subject.digest[:19]} with key {key.public.short} and attached its SLSA "
          f"provenance ({signed['attached']})", flush=True)
    return signed
