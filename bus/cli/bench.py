from __future__ import annotations

import json

import typer

from bus.bench.connectors import ConnectorBenchParams, run_connectors_benchmark
from bus.bench.process import run_process_benchmark
from bus.bench.route import RouteParams, run_route_benchmark
from bus.bench.soak import SoakParams, run_soak_benchmark
from bus.cli.app import app
from bus.cli.infra import Engine

bench_app = typer.Typer(help="Benchmarks: print figures as ratios to a baseline measured in the same run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

ExactWatermarks = typer.Option(
    False, "--exact-watermarks", help="Single-record batches for everything on the embedded broker, baseline and bus alike (slower; "
    "exact high watermarks)."
)


BrokerOption = typer.Option(
    "kafka", "--broker", help="The broker to start for the run: kafka (a local Apache Kafka node in a temporary "
    "folder, removed after) or embedded (tansu, memory only). BUS_BOOTSTRAP_SERVERS names an existing cluster "
    "instead.", case_sensitive=False,
)


def _say(line: str) -> None:
    typer.echo(line, err=True)


@bench_app.command("route")
def route(
    seconds: float = typer.Option(15.0, "--seconds", min=0.5, help="Measured seconds of each run."),
    warmup: float = typer.Option(2.0, "--warmup", min=0, help="Seconds of each run before the measured ones "
                                 "(excluded, reported)."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Rounds of baseline, untouched, filtered and fan-out "
                               "runs; the ratios are the medians over the rounds."),
    rate: int = typer.Option(1000, "--rate", min=1, help="Publish rate for the latency measurement (records/s)."),
    latency_seconds: float = typer.Option(30.0, "--latency-seconds", min=0.5, help="How long to measure latency."),
    latency_warmup: float = typer.Option(5.0, "--latency-warmup", min=0, help="Seconds at the rate before that."),
    broker: Engine = BrokerOption,
    exact_watermarks: bool = ExactWatermarks,
) -> None:
    """Router throughput in steady state as ratios to a raw consume->produce passthrough, and
    publish -> subscription latency. Prints progress, then one JSON line."""
    params = RouteParams(seconds=seconds, warmup_s=warmup, rounds=rounds, rate=rate, latency_seconds=latency_seconds,
                         latency_warmup_s=latency_warmup, exact_watermarks=exact_watermarks)
    typer.echo(json.dumps(run_route_benchmark(params, engine=broker.value, say=_say)))


@bench_app.command("process")
def process(
    records: int = typer.Option(200_000, "--records", min=100, help="Camera statuses and alarms, together, in the "
                                "soak's proportions."),
    warmup: float = typer.Option(10.0, "--warmup", min=0, help="Seconds of the processors' work after their first "
                                 "commit that are not measured (reported)."),
    raw_seconds: float = typer.Option(10.0, "--raw-seconds", min=0.5, help="Measured seconds of each baseline "
                                      "run (before and after the processors)."),
    timeout: float = typer.Option(1800.0, "--timeout", min=10,
                                  help="Longest wait for the processors to read them all."),
    broker: Engine = BrokerOption,
    exact_watermarks: bool = ExactWatermarks,
) -> None:
    """The stateful processors' rate in steady state (`bus process`, as `bus up` runs them) as a
    ratio to a raw consume->produce passthrough of the same records. Prints one JSON line."""
    result = run_process_benchmark(records, exact_watermarks=exact_watermarks, timeout_s=timeout, say=_say,
                                   engine=broker.value, warmup_s=warmup, raw_seconds=raw_seconds)
    typer.echo(json.dumps(result))


@bench_app.command("connectors")
def connectors(
    seconds: float = typer.Option(10.0, "--seconds", min=0.5, help="Measured seconds of each part."),
    warmup: float = typer.Option(2.0, "--warmup", min=0, help="Seconds of each part before the measured ones."),
    records: int = typer.Option(20_000, "--records", min=1, help="Distinct records of the raw produce baseline."),
    clients: int = typer.Option(8, "--clients", min=1, max=64, help="Concurrent clients POSTing single records."),
    batch_records: int = typer.Option(500, "--batch-records", min=1, max=10_000, help="Records per JSON-lines batch."),
    batch_clients: int = typer.Option(4, "--batch-clients", min=1, max=64, help="Concurrent clients POSTing batches."),
    webhook: int = typer.Option(80_000, "--webhook", min=2, help="Records preloaded for the webhook sink."),
    webhook_concurrency: int = typer.Option(16, "--webhook-concurrency", min=1, max=1024,
                                            help="The sink's max_concurrency."),
    broker: Engine = BrokerOption,
    exact_watermarks: bool = ExactWatermarks,
) -> None:
    """HTTP ingest and webhook sink rates in steady state as ratios to the broker's raw produce
    rate, in one run. Prints one JSON line."""
    params = ConnectorBenchParams(
        seconds=seconds, warmup_s=warmup, records=records, clients=clients, batch_records=batch_records,
        batch_clients=batch_clients, webhook_records=webhook, webhook_concurrency=webhook_concurrency,
        exact_watermarks=exact_watermarks,
    )
    typer.echo(json.dumps(run_connectors_benchmark(params, engine=broker.value, say=_say)))


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
    broker: Engine = BrokerOption,
) -> None:
    """The load-and-soak benchmark: mixed traffic through ingest, router, processors and sinks.

    Starts its own broker (--broker: a local Apache Kafka node by default, or the embedded one)
    and registry (unless BUS_BOOTSTRAP_SERVERS / BUS_REGISTRY_URL are set) and a copy of
    topology.yaml with local endpoints and throwaway databases. Prints progress every 10 s, the
    figures, then one JSON line; exit 1 when a target fails."""
    params = SoakParams(rate=rate, seconds=seconds, warmup_s=warmup, clients=clients, drain_timeout_s=drain_timeout,
                        exact_watermarks=exact_watermarks, engine=broker.value)
    result = run_soak_benchmark(params=params, say=lambda line: typer.echo(line, err=True))
    typer.echo(json.dumps(result))
    if not result["pass"]:
        raise typer.Exit(1)
