"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import typer

TopologyOption = typer.Option(
    Path("topology.yaml"),
    "--topology",
    "-t",
    envvar="BUS_TOPOLOGY",
    help="The city's topology file.",
    show_default=True,
)
