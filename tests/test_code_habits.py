"""Code habits checked on the source text: no ``noqa`` for a rule ruff does not select, and no citation of a
document that is not in the repository."""
from __future__ import annotations

import io
import re
import tokenize
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sorted([*(ROOT / "infbuild").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
                 ROOT / "dodo.py"])
NOQA = re.compile(r"#\s*noqa\s*:\s*([A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)", re.IGNORECASE)
CODE = re.compile(r"([A-Z]+)([0-9]*)")


def _selected() -> list[str]:
    return list(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["lint"]["select"])


def _is_selected(code: str, selected: list[str]) -> bool:
    """Whether ruff's ``select`` covers a rule code: same linter prefix (BLE is not B), then a matching number."""
    match = CODE.fullmatch(code.upper())
    assert match, code
    for entry in selected:
        prefix = CODE.fullmatch(entry.upper())
        if prefix and prefix.group(1) == match.group(1) and match.group(2).startswith(prefix.group(2)):
            return True
    return False


def _noqa_codes(path: Path) -> list[tuple[int, str]]:
    """(line, code) of every ``# noqa: CODE`` comment (comments only: a string that says noqa is not one)."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if token.type == tokenize.COMMENT:
            for match in NOQA.finditer(token.string):
                found += [(token.start[0], code.strip().upper()) for code in match.group(1).split(",")]
    return found


def test_the_rule_check_tells_linters_apart() -> None:
    selected = ["E", "F", "W", "B", "I"]
    assert _is_selected("F401", selected) and _is_selected("B036", selected) and _is_selected("I001", selected)
    assert not _is_selected("BLE001", selected) and not _is_selected("RUF100", selected)
    assert _is_selected("E402", ["E4"]) and not _is_selected("E501", ["E4"])


def test_no_noqa_names_a_rule_ruff_does_not_select() -> None:
    selected = _selected()
    stray = [f"{path.relative_to(ROOT)}:{line}: noqa {code}" for path in PYTHON for line, code in _noqa_codes(path)
             if not _is_selected(code, selected)]
    assert not stray, f"noqa for rules ruff does not select ({', '.join(selected)}):\n" + "\n".join(stray)


def test_no_source_cites_a_design_document_missing_from_the_repository() -> None:
    name = "DESIGN" + ".md"  # spelled apart so that this file does not cite it
    if (ROOT / name).exists():
        pytest.skip(f"{name} is in the repository now")
    files = [p for p in sorted((ROOT / "infbuild").rglob("*")) if p.is_file() and p.suffix in (".py", ".json", ".md")]
    citing = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in sorted({*files, *PYTHON})
              for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if name in line]
    assert not citing, f"{name} is not in this repository: say the point instead:\n" + "\n".join(citing)
