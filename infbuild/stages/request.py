"""The worker contract: what the engine asks a stage worker (``WorkerRequest``, JSON in a file), what a stage's
``run`` receives (``Job``) and what the worker answers besides its outputs (``WorkerResult``)."""
from __future__ import annotations

import json
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..recipe import Recipe

ERROR_FILE = "error.json.tmp"  # a user-facing error: {"field": dotted path or null, "message": text}
RESULT_FILE = "result.json.tmp"  # WorkerResult


@dataclass(frozen=True)
class WorkerRequest:
    stage: str  # the stage's name
    recipe: dict[str, Any]  # Recipe.to_dict()
    root: str  # the project
    _: KW_ONLY
    out: str  # the empty staging folder the stage writes its outputs into
    device: str  # "cpu" or "cuda"
    target: str  # the target folder name the outputs are for
    upstream: dict[str, str]  # stage name -> its stamped folder
    tools: dict[str, Any] = field(default_factory=dict)  # tool facts (trtexec path and version)
    record_packages: bool = False  # report the distributions the model imported
    signing_key: str | None = None  # the key the build signs with (images are signed in the worker that pushes them)
    signing_passphrase_env: str | None = None  # the environment variable holding its passphrase
    failed: dict[str, str] = field(default_factory=dict)  # upstream artifacts whose build failed -> why

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> WorkerRequest:
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def job(self) -> Job:
        return Job(self.stage, Recipe.from_dict(self.recipe), Path(self.root), out=Path(self.out),
                   upstream={k: Path(v) for k, v in self.upstream.items()}, device=self.device, target=self.target,
                   tools=dict(self.tools), signing_key=self.signing_key,
                   signing_passphrase_env=self.signing_passphrase_env, failed=dict(self.failed))


@dataclass(frozen=True)
class Job:
    """What a stage's ``run(job)`` works with."""

    stage: str  # the stage's name (one run.py may build several stages: variants)
    recipe: Recipe
    root: Path
    _: KW_ONLY
    out: Path
    upstream: dict[str, Path]
    device: str
    target: str
    tools: dict[str, Any]
    signing_key: str | None = None
    signing_passphrase_env: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # upstream artifacts whose build failed -> why

    def signer(self) -> Any:
        """The build's signing key (a ``SigningKey``), or None when the build signs nothing."""
        from .. import settings
        from ..signing.dsse import SigningKey

        if self.signing_key is None:
            return None
        passphrase = settings.named(self.signing_passphrase_env)
        return SigningKey.read(Path(self.signing_key), passphrase.encode() if passphrase else None)


@dataclass(frozen=True)
class WorkerResult:
    failures: list[str] = field(default_factory=list)  # a judging stage's findings: stamped, the task fails
    packages: dict[str, str] | None = None  # distributions the model imported -> version
    peak_rss_mb: int | None = None  # the worker's peak resident memory (with what it inherited from the warm server)

    def write(self, out: Path) -> None:
        (out / RESULT_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def take(cls, out: Path) -> WorkerResult:
        """Read and remove the result from the staging folder (it is never a stage output)."""
        path = out / RESULT_FILE
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        finally:
            path.unlink(missing_ok=True)


def take_error(out: Path) -> dict[str, Any] | None:
    path = out / ERROR_FILE
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    finally:
        path.unlink(missing_ok=True)
