"""``bus process``: the stateful processors (camera registry, enrichment, storms)."""

from __future__ import annotations

from pathlib import Path

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption, cli_settings
from bus.processors.app import import_cameras, run_worker
from bus.processors.cameras import load_camera_file
from bus.processors.storms import StormConfig
from bus.topology.validate import load_topology


@app.command()
def process(
    topology: Path = TopologyOption,
    import_cameras_file: Path | None = typer.Option(
        None, "--import-cameras", help="Load a camera registry export (.csv with a header row, else JSON lines) into the "
        "camera table and exit. Columns: camera_id, latitude, longitude, district, street, grid_cell, owner_department, kind.",
    ),
    window_s: float = typer.Option(60.0, "--window", min=0.001, help="Storm window in seconds of event time."),
    flap_window_s: float = typer.Option(10.0, "--flap-window", min=0.001, help="Network-flap window in seconds of event time."),
    flap_threshold: int = typer.Option(100, "--flap-threshold", min=0, help="Distinct offline cameras that make a flap (0: off)."),
    idle_flush_s: float = typer.Option(30.0, "--idle-flush", min=0.0, help="Emit pending storm updates and held offline alarms after this many seconds without any alarm (0: never)."),
    log_level: str = typer.Option("WARNING", "--worker-log-level", help="faust worker log level."),
) -> None:
    """Run the stateful processors: alarms enriched from the camera table and storm-merged to
    <topic>.enriched. With --import-cameras FILE, load a camera registry file and exit."""
    topo = load_topology(topology)
    settings = cli_settings()
    if import_cameras_file is not None:
        cameras = load_camera_file(import_cameras_file)
        typer.echo(f"{import_cameras(topo, settings, cameras)} cameras imported from {import_cameras_file}")
        return
    storms = StormConfig(
        window_ms=int(window_s * 1000), flap_window_ms=int(flap_window_s * 1000), flap_threshold=flap_threshold
    )
    run_worker(topo, settings, loglevel=log_level, storms=storms, idle_flush_s=idle_flush_s or None)
