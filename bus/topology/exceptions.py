"""Errors of the topology package.

A topology file is checked completely before anything starts: every problem found is a
:class:`Problem` with its file, line and column, and :class:`TopologyInvalid` carries them
all at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from bus.errors import BusError


class TopologyError(BusError):
    """Anything wrong with a topology or a question asked of it."""


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in a topology file. ``line`` and ``col`` are 1-based.

    Sorting orders problems by file, then position, then message.
    """

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class TopologyInvalid(TopologyError):
    """A topology file that cannot be used; ``problems`` lists every problem, sorted."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = sorted(problems)
        listed = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {file}:\n{listed}")


class UnknownName(TopologyError, LookupError):
    """A lookup by name (department, event type, subscription...) that found nothing."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"unknown {kind} {name!r}; {suggest(name, known, kind)}")


class CatalogMissing(TopologyError):
    """A schema question asked of a topology that was built without its schema catalog."""


def suggest(name: str, known: Iterable[str], kind: str) -> str:
    """``did you mean 'police'?`` for a near miss, else the list of known names."""
    names = sorted(set(known))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    if not names:
        return f"no {kind} is defined"
    return f"write one of the known {_plural(kind)}: {', '.join(names)}"


def _plural(kind: str) -> str:
    return kind if kind.endswith("s") else f"{kind}s"
