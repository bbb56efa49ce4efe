"""One trace id from the camera platform's POST to the fire brigade's endpoint.

A fire alarm posted to HTTP ingest with a W3C ``traceparent`` is routed to the fire
brigade's subscription and delivered by its webhook sink: the endpoint receives the same
trace id in its ``traceparent`` header, and the ingest's and the sink's log lines name it.
Real parts throughout: broker, registry, the ingest and sink connectors, the router.
"""

from __future__ import annotations

import json
import random

import httpx
import pytest
from structlog.testing import capture_logs

from bus.connect import ConnectorRunner
from bus.demo.samples import GENERATORS
from bus.routing.service import RoutingService
from bus.topology.models import Connector
from tests.connectors.support import Endpoint, all_entry_points, wait_until
from tests.fixtures.city import City

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_a_trace_id_travels_from_ingest_through_routing_to_the_sinks_header_and_log(
    connector_city: City, make_endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    city = connector_city
    monkeypatch.setenv("TRACE_TEST_TOKEN", "trace-test-token")
    monkeypatch.setenv("TRACE_TEST_HMAC_KEY", "trace-test-hmac")
    endpoint: Endpoint = make_endpoint(hmac_key="trace-test-hmac")
    ingest = Connector.model_validate({
        "name": "skynet-platform", "type": "http_ingest", "department": "police",
        "publishes": ["camera_alarm", "camera_status"],
        "config": {"port": 0, "auth": {"token": "env:TRACE_TEST_TOKEN"}},
    })
    sink = Connector.model_validate({
        "name": "fire-dispatch-webhook", "type": "http_webhook_sink", "department": "fire_brigade",
        "subscription": "fire-alarms", "config": {"url": endpoint.url, "hmac_key": "env:TRACE_TEST_HMAC_KEY"},
    })
    alarm = GENERATORS["camera_alarm"](random.Random(3)) | {"alarm_type": "FIRE_SMOKE", "severity": "HIGH"}
    assert city.topology.subscription("fire-alarms").filter is not None  # the alarm must pass it

    with capture_logs() as logs, RoutingService(city.topology, city.settings, watch=False,
                                                environ={"BUS_HASH_MASTER_KEY": "trace-test"}) as routing:
        assert routing.wait_assigned(60)
        with ConnectorRunner(sink, city.topology, city.settings, entry_points=all_entry_points()), \
                ConnectorRunner(ingest, city.topology, city.settings, entry_points=all_entry_points()) as posting:
            answer = httpx.post(f"{posting.instance.url}/camera_alarm", content=json.dumps(alarm).encode(),  # type: ignore[union-attr]
                                headers={"Authorization": "Bearer trace-test-token", "traceparent": TRACEPARENT,
                                         "Content-Type": "application/json"}, timeout=30)
            assert answer.status_code == 202, answer.text
            wait_until(lambda: endpoint.accepted(), 60, "the fire brigade's delivery")

    (delivery,) = endpoint.accepted()
    assert delivery.json()["alarm_id"] == alarm["alarm_id"]
    assert delivery.headers["traceparent"].split("-")[1] == TRACE_ID
    traced = {(e.get("log_level"), e["event"]) for e in logs if e.get("trace_id") == TRACE_ID}
    assert any(event.startswith("published") or event == "accepted" for _, event in traced), traced
    assert ("debug", "delivered") in traced, traced
