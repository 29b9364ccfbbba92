"""The typed shape of the recipe sections the Recipe holds as attributes (defaults applied): ``.verify``,
``.bench``, ``.package`` and ``.triton``; each ``stages.<name>`` section's type is its stage package's.
They stay plain dicts at run time (keys are digests of exactly these
dicts, and workers receive them as JSON); the types let mypy check every read of them."""
from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class Tolerance(TypedDict, total=False):
    rtol: float
    atol: float


class Budget(TypedDict, total=False):
    rel_l2: float  # largest relative L2 error allowed
    cosine: float  # smallest cosine similarity allowed


class VerifyOptions(TypedDict):
    rtol: float
    atol: float
    outputs: NotRequired[dict[str, Tolerance]]  # per-output overrides
    budgets: NotRequired[dict[str, Budget]]  # per precision, for reduced-precision variants


class BenchOptions(TypedDict):
    enabled: bool
    shapes: list[str | dict[str, int]]  # labels (min/opt/max) or {dim: size}
    primary: str
    warmup: int
    iterations: int
    max_seconds: float
    rounds: int
    threads: int
    baselines: list[str]
    torch_compile_mode: str


class PackageOptions(TypedDict):
    image: str
    version: str
    base: dict[str, str]  # "cpu" / "cuda" -> base image
    include: Literal["preferred", "all"]
    push: bool
    builder: Literal["docker", "oci"]
    oci_layout: bool
    registry: dict[str, Any]
    dockerfile: list[str]
    source: str
    serve: Literal["files", "triton"]


class TritonOptions(TypedDict):
    artifacts: Literal["preferred", "all"] | list[str]
    onnxruntime: Literal["native", "python"]
    dynamic_batching: bool | dict[str, Any]
    instances: int
    version: int
    name: NotRequired[str]  # default: the recipe's name
    max_batch_size: NotRequired[int]  # default: the batch dim's max
    python_env: NotRequired[str]
