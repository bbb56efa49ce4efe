"""The connector guide's worked example (docs/connectors.md): the guide shows the files of
docs/examples/work_orders/ as they are, and those files pass the conformance suite when run
the way the guide tells a department to run them: pytest on the example's folder, in a
process of its own that knows nothing of this repository's tests, against the bus the
``BUS_*`` variables name (here the session's broker and registry, and a copy of the city's
topology under a namespace of its own)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bus.kafka.admin import admin, delete_topics
from bus.kafka.config import KafkaSettings
from tests.fixtures.city import REPO, write_city_topology

GUIDE = REPO / "docs" / "connectors.md"
EXAMPLE = REPO / "docs" / "examples" / "work_orders"
#: A fenced block of the guide preceded by ``<!-- file: PATH -->`` is a part of that file; the
#: parts, in order, are the whole file (blank lines between them aside).
PART = re.compile(r"<!-- file: (?P<path>\S+) -->\n```[a-z]*\n(?P<code>.*?)```\n", re.S)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_the_guide_shows_each_file_of_the_example_whole_and_as_it_is() -> None:
    shown: dict[str, list[str]] = {}
    for part in PART.finditer(GUIDE.read_text(encoding="utf-8")):
        shown.setdefault(part["path"], []).extend(_lines(part["code"]))
    files = {str(path.relative_to(REPO)): path for path in sorted(EXAMPLE.glob("*.py"))}
    assert set(shown) == set(files), "the guide shows other files than docs/examples/work_orders/ holds"
    for name, path in files.items():
        assert shown[name] == _lines(path.read_text(encoding="utf-8")), f"the guide's {name} differs from the file"


@pytest.mark.integration
def test_the_example_passes_the_conformance_suite_as_its_authors_run_it(
    tmp_path: Path, registry_settings: KafkaSettings,
) -> None:
    namespace = f"guide_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **registry_settings.to_environ(), "PYTHONDONTWRITEBYTECODE": "1",
           "BUS_TOPOLOGY": str(write_city_topology(tmp_path, namespace))}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q",
             "--rootdir", str(EXAMPLE), str(EXAMPLE)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
        )
    finally:
        topics = admin(registry_settings).list_topics(timeout=10).topics
        delete_topics(registry_settings, sorted(t for t in topics if t.startswith(f"{namespace}.")))
    assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout + run.stderr
