from __future__ import annotations

import json

import typer

from bus.bench.connectors import ConnectorBenchParams, run_connectors_benchmark
from bus.bench.process import run_process_benchmark
from bus.bench.route import run_route_benchmark
from bus.bench.soak import SoakParams, run_soak_benchmark
from bus.cli.app import app

bench_app = typer.Typer(help="Benchmarks: print figures as ratios to a baseline measured in the same run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

ExactWatermarks = typer.Option(
    False, "--exact-watermarks", help="Single-record batches for everything on the embedded broker, baseline and bus alike (slower; "
    "exact high watermarks)."
)


@bench_app.command("route")
def route(
    records: int = typer.Option(20_000, "--records", min=1000, help="Camera alarms routed in each scenario."),
    rate: int = typer.Option(1000, "--rate", min=1, help="Publish rate for the latency measurement (records/s)."),
    seconds: float = typer.Option(10.0, "--seconds", min=1, help="How long to measure latency."),
    exact_watermarks: bool = ExactWatermarks,
) -> None:
    """Router throughput as ratios to a raw consume->produce passthrough, and latency.
    Uses the embedded broker unless BUS_BOOTSTRAP_SERVERS is set. Prints one JSON line."""
    result = run_route_benchmark(
        records, rate, seconds, exact_watermarks=exact_watermarks, say=lambda line: typer.echo(line, err=True)
    )
    typer.echo(json.dumps(result))


@bench_app.command("process")
def process(
    records: int = typer.Option(20_000, "--records", min=100, help="Camera statuses and alarms, together, in the "
                                "soak's proportions."),
    timeout: float = typer.Option(600.0, "--timeout", min=10, help="Longest wait for the processors to read them all."),
    exact_watermarks: bool = ExactWatermarks,
) -> None:
    """The stateful processors' rate (`bus process`, as `bus up` runs them) as a ratio to a
    raw consume->produce passthrough of the same records. Uses the embedded broker unless
    BUS_BOOTSTRAP_SERVERS is set. Prints one JSON line."""
    result = run_process_benchmark(records, exact_watermarks=exact_watermarks, timeout_s=timeout,
                                   say=lambda line: typer.echo(line, err=True))
    typer.echo(json.dumps(result))


@bench_app.command("connectors")
def connectors(
    records: int = typer.Option(20_000, "--records", min=1, help="Records of the raw produce baseline."),
    single: int = typer.Option(2_000, "--single", min=1, help="Records POSTed one per request."),
    clients: int = typer.Option(8, "--clients", min=1, max=64, help="Concurrent clients POSTing single records."),
    batch: int = typer.Option(10_000, "--batch", min=1, help="Records POSTed in JSON-lines batches, in all."),
    batch_records: int = typer.Option(500, "--batch-records", min=1, max=10_000, help="Records per JSON-lines batch."),
    batch_clients: int = typer.Option(4, "--batch-clients", min=1, max=64, help="Concurrent clients POSTing batches."),
    webhook: int = typer.Option(3_000, "--webhook", min=2, help="Records the webhook sink delivers."),
    webhook_concurrency: int = typer.Option(16, "--webhook-concurrency", min=1, max=1024,
                                            help="The sink's max_concurrency."),
    exact_watermarks: bool = ExactWatermarks,
) -> None:
    """HTTP ingest and webhook sink rates as ratios to the broker's raw produce rate.

    Single-record and JSON-lines ingest, webhook deliveries, and a plain producer of the
    same records, in one run. Uses the embedded broker unless BUS_BOOTSTRAP_SERVERS is set.
    Prints one JSON line."""
    params = ConnectorBenchParams(
        records=records, ingest_single_records=single, clients=clients, ingest_batch_records=batch,
        batch_records=batch_records,
        batch_clients=batch_clients, webhook_records=webhook, webhook_concurrency=webhook_concurrency,
        exact_watermarks=exact_watermarks,
    )
    typer.echo(json.dumps(run_connectors_benchmark(params, say=lambda line: typer.echo(line, err=True))))


@bench_app.command("soak")
def soak(
    rate: int = typer.Option(2000, "--rate", min=1, help="Events/s through the HTTP ingest, all types together."),
    seconds: float = typer.Option(300.0, "--seconds", min=5, help="How long the load runs."),
    warmup: float = typer.Option(60.0, "--warmup", min=0, help="Seconds of load before the RSS baseline is taken."),
    clients: int = typer.Option(2, "--clients", min=1, max=16, help="Processes sending the load."),
    drain_timeout: float = typer.Option(300.0, "--drain-timeout", min=1, help="Longest wait after the load for "
                                        "every group to catch up before loss is counted."),
    exact_watermarks: bool = typer.Option(
        False, "--exact-watermarks", help="Run the embedded profile as `bus up` does: single-record batches for the "
        "bus's state (faust tables, connector state), batched published and routed records. Default: everything "
        "batched, as on a Kafka cluster; the lag is read from the records' own timestamps either way."),
) -> None:
    """The load-and-soak benchmark: mixed traffic through ingest, router, processors and sinks.

    Starts its own embedded broker and registry (unless BUS_BOOTSTRAP_SERVERS / BUS_REGISTRY_URL
    are set) and a copy of topology.yaml with local endpoints and throwaway databases. Prints
    progress every 10 s, the figures, then one JSON line; exit 1 when a target fails."""
    params = SoakParams(rate=rate, seconds=seconds, warmup_s=warmup, clients=clients, drain_timeout_s=drain_timeout,
                        exact_watermarks=exact_watermarks)
    result = run_soak_benchmark(params=params, say=lambda line: typer.echo(line, err=True))
    typer.echo(json.dumps(result))
    if not result["pass"]:
        raise typer.Exit(1)
