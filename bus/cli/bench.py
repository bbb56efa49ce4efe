from __future__ import annotations

import json

import typer

from bus.bench.route import run_route_benchmark
from bus.cli.app import app

bench_app = typer.Typer(help="Benchmarks: print figures as ratios to a baseline measured in the same run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("route")
def route(
    records: int = typer.Option(20_000, "--records", min=1000, help="Camera alarms routed in each scenario."),
    rate: int = typer.Option(1000, "--rate", min=1, help="Publish rate for the latency measurement (records/s)."),
    seconds: float = typer.Option(10.0, "--seconds", min=1, help="How long to measure latency."),
    exact_watermarks: bool = typer.Option(
        False, "--exact-watermarks", help="Keep the embedded broker's single-record batches (slower; what lag-exact tests run with)."
    ),
) -> None:
    """Router throughput as ratios to a raw consume->produce passthrough, and latency.
    Uses the embedded broker unless BUS_BOOTSTRAP_SERVERS is set. Prints one JSON line."""
    result = run_route_benchmark(
        records, rate, seconds, exact_watermarks=exact_watermarks, say=lambda line: typer.echo(line, err=True)
    )
    typer.echo(json.dumps(result))
