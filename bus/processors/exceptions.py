"""Errors of the stateful processors."""

from __future__ import annotations

from bus.errors import BusError


class ProcessorError(BusError):
    """A stateful processor cannot go on."""


class CameraImportError(ProcessorError):
    """A camera registry file has bad lines; every problem is listed with its line number."""

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {path}:{line}: {problem}" for line, problem in problems)
        super().__init__(f"{len(problems)} bad camera record(s) in {path}:\n{lines}")
