"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import typer

from bus.kafka.admin import with_detected_profile
from bus.kafka.config import KafkaSettings


def cli_settings() -> KafkaSettings:
    """The broker and registry settings of a command: ``BUS_*`` variables, and the profile of
    the broker found there unless ``BUS_KAFKA_PROFILE`` chooses one."""
    return with_detected_profile(KafkaSettings())

TopologyOption = typer.Option(
    Path("topology.yaml"),
    "--topology",
    "-t",
    envvar="BUS_TOPOLOGY",
    help="The city's topology file.",
    show_default=True,
)
