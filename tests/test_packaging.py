"""The project installs the dependency versions it was tested with, the same way everywhere.

``constraints.txt`` pins every distribution the bus and its tests need (transitively); the
README's two commands, CI and the soak script install through it. A dependency added to
pyproject without a pin, or a venv that drifted from the pins, fails here with what to run.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "citybus"
REPIN = (
    "re-pin: .venv/bin/pip install -U -e '.[dev]' (without the constraints), run the tests, then "
    "{ head -2 constraints.txt; .venv/bin/pip freeze --exclude-editable; } > constraints.new && "
    "mv constraints.new constraints.txt (README, Dependencies)"
)


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert match, f"constraints.txt:{number}: {line!r} is not name==version"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _required(name: str, extras: frozenset[str], seen: dict[str, set[str]]) -> None:
    """Every distribution ``name[extras]`` needs, installed, into ``seen`` (name -> extras)."""
    key = canonicalize_name(name)
    if key in seen and extras <= seen[key]:
        return
    seen.setdefault(key, set()).update(extras)
    for text in metadata.requires(name) or []:
        req = Requirement(text)
        wanted = [{"extra": e} for e in extras] or [{"extra": ""}]
        if req.marker is None or any(req.marker.evaluate(env) for env in wanted):
            _required(req.name, frozenset(req.extras), seen)


def _commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]


def test_every_dependency_of_the_bus_and_its_tests_is_pinned_at_the_installed_version() -> None:
    pins = _pins()
    needed: dict[str, set[str]] = {}
    _required(PROJECT, frozenset({"dev"}), needed)
    needed.pop(canonicalize_name(PROJECT))
    unpinned = sorted(set(needed) - set(pins))
    assert not unpinned, f"constraints.txt does not pin {unpinned}; {REPIN}"
    drifted = {
        name: (metadata.version(name), pins[name])
        for name in needed
        if metadata.version(name) != pins[name]
    }
    assert not drifted, (
        f"installed (left) differs from constraints.txt (right): {drifted}; this venv was not made with the "
        f"README's command (rebuild it), or the pins are stale ({REPIN})"
    )


def test_the_readme_ci_and_the_soak_install_through_the_constraints() -> None:
    readme = _commands((ROOT / "README.md").read_text())
    ci = _commands((ROOT / ".ci" / "run").read_text())
    soak = [c for c in _commands((ROOT / "ops" / "soak").read_text()) if not c.startswith("echo")]
    assert len(readme) >= 2 and ci and soak
    assert readme[1] == ci[0], "CI must run exactly the README's test command"
    for command in [*readme[:2], *ci, *soak]:
        assert "-c constraints.txt" in command, f"installs without the pins: {command}"
