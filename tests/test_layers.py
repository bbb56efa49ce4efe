"""The bus's layers (pyproject.toml, [tool.importlinter]): each subpackage imports only the ones
below it, so no two are in an import cycle. A new import that breaks this fails here, naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint(config: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))"
    return subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)


def test_every_layer_imports_only_the_layers_below_it() -> None:
    result = _lint(REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_import_against_the_layers_is_named(tmp_path: Path) -> None:
    # The same contract with two layers swapped: the router imports the connector kit, so the
    # contract breaks and says where (a check that could not fail would prove nothing).
    text = (REPO / "pyproject.toml").read_text()
    swapped = text.replace('    "bus.routing",\n    "bus.connect",\n', '    "bus.connect",\n    "bus.routing",\n')
    if swapped == text:
        pytest.fail("the layers in pyproject.toml no longer list bus.routing right above bus.connect")
    config = tmp_path / "pyproject.toml"
    config.write_text(swapped)
    result = _lint(config)
    assert result.returncode == 1
    assert "bus.routing.router -> bus.connect" in result.stdout, result.stdout
