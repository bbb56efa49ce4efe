from __future__ import annotations

from pathlib import Path

import typer

from bus.cli.app import app
from bus.connect.registry import KIT_CHECKS
from bus.topology.validate import validate_topology


@app.command()
def validate(
    file: Path = typer.Argument(Path("topology.yaml"), envvar="BUS_TOPOLOGY", help="Topology file to check."),
) -> None:
    """Check a topology file and its schemas; print every problem as FILE:LINE:COL: message."""
    problems = validate_topology(file, KIT_CHECKS)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {file}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: OK")
