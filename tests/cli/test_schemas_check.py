"""`bus schemas check` against the real registry: a breaking change is caught and named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bus.kafka.config import KafkaSettings
from tests.cli.test_cli import run
from tests.fixtures.city import REPO, write_city_topology


def _edit_alarm_schema(schemas: Path, edit) -> None:
    path = schemas / "surveillance" / "camera_alarm.avsc"
    schema = json.loads(path.read_text())
    edit(schema["fields"])
    path.write_text(json.dumps(schema, indent=2))


def test_check_register_then_catch_an_incompatible_change(tmp_path: Path, registry_settings: KafkaSettings, unique_name) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", schemas)
    topology = write_city_topology(tmp_path, unique_name("chk").replace("-", "_").lower(), schemas)
    first = run(["schemas", "check", "-t", str(topology)], registry_settings)
    assert first.returncode == 0, first.stderr.decode()
    assert "camera_alarm" in first.stdout.decode() and ": new" in first.stdout.decode()

    registered = run(["schemas", "register", "-t", str(topology)], registry_settings)
    assert registered.returncode == 0, registered.stderr.decode()
    again = run(["schemas", "check", "-t", str(topology)], registry_settings)
    assert again.returncode == 0 and again.stdout.decode().count(": unchanged") == 4

    # A compatible change: a new optional field with a default.
    _edit_alarm_schema(schemas, lambda fields: fields.append(
        {"name": "zone", "type": ["null", "string"], "default": None, "doc": "Patrol zone."}))
    ok = run(["schemas", "check", "-t", str(topology)], registry_settings)
    assert ok.returncode == 0, ok.stdout.decode()
    assert "camera_alarm" in ok.stdout.decode() and ": compatible" in ok.stdout.decode()

    # A breaking change under BACKWARD: a required field without a default.
    _edit_alarm_schema(schemas, lambda fields: fields.append(
        {"name": "operator_code", "type": "string", "doc": "Who confirmed the alarm."}))
    bad = run(["schemas", "check", "-t", str(topology)], registry_settings)
    out = bad.stdout.decode()
    assert bad.returncode == 1
    assert "incompatible" in out
    assert "operator_code" in out
    assert "default" in out
