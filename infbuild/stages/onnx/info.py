"""``export.json``, beside the ONNX export: opsets asked for and written, where the weights went, the graph's
inputs and outputs with their dims, and the digest of the graph without its weights (what a TensorRT timing
cache is keyed on). Its one reader and writer."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ... import jsonio

INFO = "export.json"

Dims = list[int | str]  # a tensor's dims: sizes, or the named dim's name


@dataclass(frozen=True)
class ExportInfo:
    opset_requested: int
    opset: int | None  # what the exporter wrote
    external_data: bool  # the weights are in model.onnx.data
    external_data_requested: bool
    inputs: dict[str, Dims]
    outputs: dict[str, Dims]
    nodes: int
    initializers: int
    torch: str
    onnx: str
    graph_sha256: str  # the graph without its weights

    def write(self, folder: Path) -> None:
        jsonio.write_atomic(folder / INFO, asdict(self), durable=False)

    @classmethod
    def read(cls, folder: Path) -> ExportInfo | None:
        data = jsonio.read_mapping(folder / INFO)
        try:
            return cls(**data)
        except TypeError:  # a field missing or unknown
            return None


def graph_digest(folder: Path) -> str | None:
    """The export's graph digest (all a timing cache reads of it), or None when export.json has none."""
    value = jsonio.read_mapping(folder / INFO).get("graph_sha256")
    return value if isinstance(value, str) else None
