"""Errors of rule loading: a problem inside one rule file, and its report with file and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class RuleError(ValueError):
    """What is wrong, and where inside the rule (a path of keys and indexes, resolved to a line later)."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc

    def within(self, *prefix: str | int) -> RuleError:
        """The same error seen from an enclosing key (e.g. `detection`)."""
        return RuleError(self.message, (*prefix, *self.loc))


@dataclass(frozen=True)
class LoadError:
    """One rule file that could not be loaded; the other files load regardless."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"
