"""The typed shape of each recipe section a stage reads (defaults applied): what ``Recipe.stages``, ``.verify``,
``.bench`` and ``.package`` hold. They stay plain dicts at run time (keys are digests of exactly these
dicts, and workers receive them as JSON); the types let mypy check every read of them."""
from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class OnnxOptions(TypedDict):
    opset: int
    external_data: bool
    graph_only: bool


class ReferenceOptions(TypedDict):
    seed: int


class AotiOptions(TypedDict):
    device: Literal["auto", "cpu", "cuda"]
    max_autotune: bool
    inductor_configs: dict[str, Any]


class TensorrtOptions(TypedDict):
    builder_optimization_level: int | None
    workspace_mib: int | None
    hardware_compatibility_level: str
    version_compatible: bool
    sparsity: str
    precision: list[str]
    strongly_typed: bool
    extra_args: list[str]
    trtexec: str | None
    required: bool


class OnnxVariantOptions(TypedDict):
    optimization_level: Literal["basic", "extended", "all"]
    fusion_model_type: str
    per_channel: bool
    calibration: Literal["minmax", "entropy", "percentile"]


StageOptions = TypedDict("StageOptions", {"onnx": OnnxOptions, "reference": ReferenceOptions, "aoti": AotiOptions,
                                          "tensorrt": TensorrtOptions, "onnx_variants": OnnxVariantOptions})


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
