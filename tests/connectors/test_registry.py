"""Connector types are found through the entry-point group `bus.connect`."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from bus.connect import Sink, Source, UnknownConnectorType, installed, load_connector_class
from bus.connect.exceptions import ConnectorLoadError
from connectors.http_ingest import HttpIngest
from connectors.webhook_sink import WebhookSink
from tests.connectors.support import ENTRY_POINTS, entry_points, install_entry_points


def test_the_registry_lists_both_connectors_from_entry_points() -> None:
    assert installed(entry_points()) == ENTRY_POINTS
    assert load_connector_class("http_ingest", entry_points=entry_points()) is HttpIngest
    assert load_connector_class("http_webhook_sink", entry_points=entry_points()) is WebhookSink
    assert issubclass(HttpIngest, Source) and issubclass(WebhookSink, Sink)


def test_entry_points_of_an_installed_distribution_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(install_entry_points(tmp_path)))
    assert ENTRY_POINTS.items() <= installed().items()  # found without being handed the list
    assert load_connector_class("http_webhook_sink") is WebhookSink


def test_importing_a_connector_module_registers_nothing() -> None:
    before = installed([])
    import connectors.http_ingest  # noqa: F401

    assert installed([]) == before == {}


def test_an_unknown_type_names_the_installed_ones() -> None:
    with pytest.raises(UnknownConnectorType, match=r"unknown connector type 'mqtt_source'; write one of the known "
                                                   r"connector types: http_ingest, http_webhook_sink"):
        load_connector_class("mqtt_source", entry_points=entry_points())


@pytest.mark.parametrize(
    ("target", "message"),
    [("connectors.nowhere:Thing", "cannot be loaded: ModuleNotFoundError"),
     ("connectors.http_ingest:Missing", "cannot be loaded: AttributeError"),
     ("connectors.http_ingest:HttpIngestConfig", "is not a subclass of bus.connect.Source")],
    ids=["no module", "no class", "not a connector"],
)
def test_a_broken_entry_point_is_named(target: str, message: str) -> None:
    broken = [EntryPoint("broken", target, "bus.connectors")]
    with pytest.raises(ConnectorLoadError, match=message):
        load_connector_class("broken", entry_points=broken)


def test_one_name_with_two_targets_is_an_error() -> None:
    clash = [*entry_points(), EntryPoint("http_ingest", "parking_bus.ingest:Other", "bus.connectors")]
    with pytest.raises(ConnectorLoadError, match="declared twice"):
        installed(clash)
