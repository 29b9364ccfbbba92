"""The export stage's files: ``program.json`` (what the exported program is, as digests: what the model stages'
keys read) and ``program.pt2`` (``torch.export.save`` of the same program, what the fp32 CPU model stages compile).
The one reader and writer of program.json; torch-free (the planner reads it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ... import jsonio

PROGRAM = "program.json"
SAVED = "program.pt2"


@dataclass(frozen=True)
class ProgramInfo:
    digest: str  # of the graph and the weights together: what "the same program" means
    graph: str  # the graph with nodes numbered in order, its signature and dims' ranges
    weights: str  # every parameter, buffer and constant (name, dtype, shape, bytes)
    nodes: int
    parameters: int  # the parameter count (what a worker's memory estimate reads)
    torch: str

    def write(self, folder: Path) -> None:
        jsonio.write_atomic(folder / PROGRAM, asdict(self), durable=False)

    @classmethod
    def read(cls, folder: Path) -> ProgramInfo | None:
        """The folder's record, or None (missing, unreadable, or a field missing or of the wrong type)."""
        data: dict[str, Any] = jsonio.read_mapping(folder / PROGRAM)
        text, counts = ("digest", "graph", "weights", "torch"), ("nodes", "parameters")
        if not all(isinstance(data.get(k), str) for k in text) or \
                not all(isinstance(data.get(k), int) and not isinstance(data[k], bool) for k in counts):
            return None
        return cls(**{k: data[k] for k in (*text, *counts)})


def parameter_count(folder: Path) -> int:
    """The parameter count the export stage recorded (0 when there is none to read)."""
    value = jsonio.read_mapping(folder / PROGRAM).get("parameters")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
