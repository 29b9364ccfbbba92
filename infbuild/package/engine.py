"""The Docker engine builder (docker SDK, DOCKER_HOST honoured): a generated Dockerfile and a minimal build
context holding only the files that go in; build with progress, tag, optionally push."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import InfbuildError
from .oci import write_tar


class EngineError(InfbuildError):
    """The Docker engine is unreachable or a build/push failed."""


def engine_available() -> str | None:
    """None when an engine socket looks reachable, else why not (checked without connecting)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        path = host[len("unix://"):]
        return None if Path(path).exists() else f"no Docker engine (no socket at {path}; set DOCKER_HOST)"
    return None


def dockerfile(base: str, extra: list[str], folders: list[str] | None = None, env: dict[str, str] | None = None,
               cmd: list[str] | None = None) -> str:
    """FROM the base, COPY each top folder of the files, the environment and command, then the recipe's lines."""
    lines = [f"FROM {base}", *(f"COPY {top}/ /{top}/" for top in (folders or ["opt"]))]
    lines += [f"ENV {k}={v}" + (f"${{{k}:+:${k}}}" if k.endswith("PATH") else "") for k, v in (env or {}).items()]
    if cmd:
        lines.append(f"CMD {json.dumps(cmd)}")
    return "\n".join(lines + list(extra)) + "\n"


def build(files: dict[str, Path | bytes], labels: dict[str, str], base: str, tag: str, extra: list[str],
          push: bool, credentials: tuple[str, str] | None, log: Any = print, env: dict[str, str] | None = None,
          cmd: list[str] | None = None) -> dict[str, Any]:
    import docker
    from docker.errors import APIError, DockerException

    text = dockerfile(base, extra, sorted({name.split("/", 1)[0] for name in files}), env, cmd)
    context = tempfile.TemporaryFile()  # the build context, streamed to the engine (never whole in memory)
    write_tar({**files, "Dockerfile": text.encode()}, context)
    context.seek(0)
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except DockerException as exc:
        context.close()
        raise EngineError(f"Docker engine unreachable ({os.environ.get('DOCKER_HOST', 'default socket')}): {exc}") from None
    try:
        for chunk in client.api.build(fileobj=context, custom_context=True, tag=tag, labels=labels,
                                      rm=True, forcerm=True, pull=False, decode=True):
            if "stream" in chunk and chunk["stream"].strip():
                log(f"[docker] {chunk['stream'].rstrip()}")
            if "error" in chunk:
                raise EngineError(f"docker build failed: {chunk['error'].strip()}")
        image = client.images.get(tag)
        base_image = client.images.get(base)
        result: dict[str, Any] = {"id": image.id, "size": image.attrs.get("Size"), "dockerfile": text,
                                  "base_layers": len((base_image.attrs.get("RootFS") or {}).get("Layers") or []),
                                  "base_digests": base_image.attrs.get("RepoDigests") or []}
        if push:
            repository, _, tag_name = tag.rpartition(":")
            auth = {"username": credentials[0], "password": credentials[1]} if credentials else None
            for chunk in client.api.push(repository, tag=tag_name, stream=True, decode=True, auth_config=auth):
                if "error" in chunk:
                    raise EngineError(f"docker push of {tag} failed: {chunk['error'].strip()}")
                if chunk.get("status") and chunk.get("id") is None:
                    log(f"[docker] {chunk['status']}")
            image.reload()
            result["repo_digests"] = image.attrs.get("RepoDigests", [])
        return result
    except APIError as exc:
        raise EngineError(f"docker: {exc.explanation or exc}") from None
    finally:
        client.close()
        context.close()
