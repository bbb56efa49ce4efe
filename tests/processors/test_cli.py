"""``bus process --import-cameras``: a bad file is refused with every line; a good one is imported.
Run as the ``bus`` command would (a subprocess through ``bus.cli.app.main``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# `bus process` is registered by importing bus.cli.processors (the import list of app.main).
BUS = "import sys, bus.cli.processors; from bus.cli.app import main; sys.argv[0] = 'bus'; main()"


def bus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BUS, *args], cwd=REPO, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=60,
    )


def test_import_refuses_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "cameras.jsonl"
    bad.write_text('{"camera_id": "A", "kind": "DRONE"}\nnot json\n', encoding="utf-8")
    result = bus("process", "--import-cameras", str(bad))
    assert result.returncode == 1, result.stderr
    assert "2 bad camera record(s)" in result.stderr
    assert "cameras.jsonl:1: kind: 'DRONE' is not one of" in result.stderr
    assert "cameras.jsonl:2: not JSON" in result.stderr


def test_import_good_file(tmp_path: Path, city) -> None:  # noqa: ANN001
    good = tmp_path / "cameras.csv"
    good.write_text("camera_id,latitude,longitude,district,owner_department\nCAM-CC-1,23.0,113.1,LIUNAN,police\n"
                    "CAM-CC-2,23.0,113.1,LIUNAN,housing\n", encoding="utf-8")
    env = {
        "BUS_BOOTSTRAP_SERVERS": city.settings.bootstrap_servers,
        "BUS_KAFKA_PROFILE": str(city.settings.kafka_profile),
        "BUS_REGISTRY_URL": city.settings.registry_url,
    }
    result = bus("process", "--import-cameras", str(good), "-t", str(city.path), env=env)
    assert result.returncode == 0, result.stderr
    assert "2 cameras imported" in result.stdout
