from __future__ import annotations

import sys

import typer

from bus import __version__, logs
from bus.errors import BusError
from bus.runtime.memory import limit_arenas, start_trimming

app = typer.Typer(
    name="bus",
    help="The city data bus: departments publish typed events once; every entitled department receives them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
schemas_app = typer.Typer(help="Event schemas: check compatibility, register.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bus {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    log_level: str = typer.Option("INFO", "--log-level", envvar="BUS_LOG_LEVEL", help="DEBUG, INFO, WARNING, ERROR."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    logs.configure(log_level)


def main() -> None:
    limit_arenas()  # before any thread starts (bus.runtime.memory says why)
    start_trimming()
    # Commands are registered by importing their modules (explicit list, no side effects elsewhere).
    from bus.cli import (  # noqa: F401
        bench, connectors, dlq, events, infra, integrate, ops, processors, routing, schemas, topology, web,
    )

    try:
        app()
    except BusError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
