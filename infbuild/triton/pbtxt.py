"""Protocol-buffer text format for Triton's ``ModelConfig``: plain data in, ``config.pbtxt`` text out.

A dict is a message, a list of dicts a repeated message, a list of scalars a repeated scalar; map fields
(``parameters``, ``cc_model_filenames``) are lists of ``{"key", "value"}`` messages, as the text format spells
them; ``Enum`` values are written bare (``TYPE_FP32``, ``KIND_GPU``)."""
from __future__ import annotations

import json
from typing import Any, Mapping


class Enum(str):
    """An enum value: written without quotes."""


def render(message: Mapping[str, Any]) -> str:
    return "".join(_fields(message, 0))


def _fields(message: Mapping[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    lines: list[str] = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            lines += [f"{pad}{key} {{\n", *_fields(value, depth + 1), f"{pad}}}\n"]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append(f"{pad}{key} [\n")
            for index, item in enumerate(value):
                lines += [f"{pad}  {{\n", *_fields(item, depth + 2), f"{pad}  }}{',' if index < len(value) - 1 else ''}\n"]
            lines.append(f"{pad}]\n")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]\n")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}\n")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # JSON's short escapes (\", \\, \n) are text-format escapes
