"""What an exported program *is*, as a digest: its graph with nodes numbered in order (torch numbers some nodes
from a process-wide counter: ``sym_size_int_3`` in one export is ``sym_size_int_7`` in the next), its signature,
its dims' ranges and every parameter, buffer and constant's bytes. Stack traces, source lines and other node
metadata are left out: they change with a comment edit and change nothing the program computes."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import torch

_SYMBOL = re.compile(r"\b[su]\d+\b")


def _target(target: Any) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        return str(target)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _arg(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, torch.fx.Node):
        return names[value.name]
    if isinstance(value, list | tuple):
        return [_arg(v, names) for v in value]
    if isinstance(value, dict):
        return {str(k): _arg(v, names) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, slice):
        return ["slice", _arg(value.start, names), _arg(value.stop, names), _arg(value.step, names)]
    if isinstance(value, float | int | bool | str) or value is None:
        return value
    return repr(value)


def _shape(node: torch.fx.Node) -> Any:
    value: Any = node.meta.get("val")
    if not hasattr(value, "shape"):
        return None
    return [int(s) if isinstance(s, int) else _SYMBOL.sub("s", str(s)) for s in value.shape] + [str(value.dtype)]


def graph_lines(program: torch.export.ExportedProgram) -> list[Any]:
    """The graph as plain data, nodes numbered by position (placeholders keep their names: the signature's)."""
    names: dict[str, str] = {}
    lines: list[Any] = []
    for index, node in enumerate(program.graph.nodes):
        names[node.name] = node.name if node.op == "placeholder" else f"%{index}"
        lines.append([node.op, names[node.name], _target(node.target), _arg(node.args, names),
                      _arg(node.kwargs, names), _shape(node)])
    signature = program.graph_signature
    lines.append(["inputs", [[str(s.kind), _arg(getattr(s.arg, "name", None), names), s.target]
                             for s in signature.input_specs]])
    lines.append(["outputs", [[str(s.kind), s.target] for s in signature.output_specs]])
    lines.append(["ranges", sorted(str(r) for r in program.range_constraints.values())])
    return lines


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def weights_digest(program: torch.export.ExportedProgram) -> tuple[str, int]:
    """sha256 over every parameter, buffer and constant (name, dtype, shape, bytes), and the parameter count."""
    h = hashlib.sha256()
    count = 0
    for kind, table in (("state", program.state_dict), ("constant", program.constants)):
        for name in sorted(table):
            value = table[name]
            if isinstance(value, torch.Tensor):
                h.update(f"{kind}:{name}:{value.dtype}:{list(value.shape)}\n".encode())
                h.update(_tensor_bytes(value))
                count += value.numel() if kind == "state" else 0
            else:
                h.update(f"{kind}:{name}:{type(value).__name__}\n".encode())
    return h.hexdigest(), count


def program_digest(program: torch.export.ExportedProgram) -> dict[str, Any]:
    graph = hashlib.sha256(json.dumps(graph_lines(program), sort_keys=True).encode()).hexdigest()
    weights, parameters = weights_digest(program)
    return {"digest": hashlib.sha256(f"{graph}:{weights}".encode()).hexdigest(), "graph": graph, "weights": weights,
            "nodes": len(program.graph.nodes), "parameters": parameters}
