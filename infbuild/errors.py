"""One exception hierarchy for everything a user can get wrong; rendered at the CLI edge."""
from __future__ import annotations

from dataclasses import dataclass


class InfbuildError(Exception):
    """Base of every error infbuild reports to users as a message, never a traceback."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One located problem in a recipe file: ``FILE:LINE: field.path: message``."""

    file: str
    line: int
    field: str
    message: str

    def render(self) -> str:
        """One line, always: control characters from the user's file are shown escaped."""
        where = f"{self.file}:{self.line}"
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class RecipeError(InfbuildError):
    """One or more problems in recipe files, all reported at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.field))
        super().__init__("\n".join(p.render() for p in self.problems))


class FieldError(InfbuildError):
    """A problem found in a stage worker that belongs to one recipe field (located by the caller)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConfigError(InfbuildError):
    """The project configuration (pyproject.toml [tool.infbuild], environment) is wrong."""


class StageFailed(InfbuildError):
    """A stage worker ran and failed (export error, compile error, verification failure)."""


class ArtifactError(InfbuildError):
    """An artifact on disk is missing, tampered with, or does not match the manifest."""


class InputError(InfbuildError):
    """Inputs given to a loaded model do not match the recipe (names, dtype, rank, dims out of range)."""
