"""`bus web` (the live page of the city's data flows) and `bus graph` (the topology as SVG)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption, cli_settings
from bus.topology.graph import render_svg
from bus.topology.validate import load_topology
from bus.web.cluster import ClusterProvider
from bus.web.page import PageServer
from bus.web.state import DEFAULT_INTERVAL_S


@app.command()
def graph(
    topology: Path = TopologyOption,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the SVG here instead of to stdout."),
) -> None:
    """The topology as a picture (SVG): publishing departments, event types, subscriptions, receiving departments."""
    picture = render_svg(load_topology(topology))
    if output is None:
        typer.echo(picture, nl=False)
        return
    output.write_text(picture, encoding="utf-8")
    typer.echo(f"wrote {output}", err=True)


WEB_HELP = "\n\n".join([
    "The live page of the city's data flows: the graph of departments and flows, lag per consumer stream with "
    "a chart of the last hour, dead letters, connector health and camera availability. Everything is served by "
    "this process: the page loads nothing from the internet.",
    "It polls the cluster named by BUS_BOOTSTRAP_SERVERS every --interval seconds and keeps the last hour of lag "
    "in memory (a restart starts the charts afresh).",
    "Bound beyond loopback it refuses to start without BUS_WEB_TOKEN; every request then needs "
    "`Authorization: Bearer <token>`, or, in a browser, opening /?token=<token> once (a cookie keeps it).",
])


@app.command(help=WEB_HELP)
def web(
    topology: Path = TopologyOption,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on. Beyond loopback, BUS_WEB_TOKEN must be set."
    ),
    port: int = typer.Option(8088, "--port", help="Port to listen on (0: any free port)."),
    interval: float = typer.Option(
        DEFAULT_INTERVAL_S, "--interval", min=0.5, help="Seconds between polls of the cluster (and page refreshes)."
    ),
) -> None:
    topo = load_topology(topology)
    token = os.environ.get("BUS_WEB_TOKEN") or None
    provider = ClusterProvider(topo, cli_settings(), interval_s=interval)
    # Refuses a non-loopback address without a token, before anything polls or listens.
    server = PageServer(topo, provider, host=host, port=port, token=token, refresh_s=interval)
    with provider, server:
        typer.echo(f"page: {server.url}/" + (" (token required: open /?token=<BUS_WEB_TOKEN>)" if token else ""))
        typer.echo("Ctrl-C stops it.")
        _wait_for_signal()


def _wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
