"""The departments' simulators against the real peers they talk to: the real connectors
(through ConnectorRunner) on the real broker and registry, real Mosquitto, real
PostgreSQL (a database per test, dropped after) and real HTTP on loopback."""

from __future__ import annotations

import collections
import json
import random
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bus.connect import ConnectorRunner
from bus.connect.signing import sign
from bus.consume.tail import TailedRecord, tail
from bus.demo.samples import DISTRICTS, GENERATORS
from bus.demo.simulators import (
    CameraDevices,
    CameraFleet,
    CameraPlatform,
    CaseSystem,
    ChangeTable,
    DemoCity,
    DemoCityConfig,
    DepartmentEndpoints,
    PeerUnreachable,
    PopulationRegistry,
    SimulatorError,
    demo_topology,
)
from bus.demo.simulators.base import Pacer
from bus.demo.simulators.cases import LIFECYCLE
from bus.kafka.exceptions import KafkaError
from bus.schemas.records import to_datum
from bus.topology.models import Connector, Topology
from tests.connectors.services import Database, mqtt_address, postgres_admin_dsn
from tests.connectors.support import produce_wire_records, wait_until
from tests.fixtures.city import REPO, City
from bus.topology.validate import load_topology

SHIPPED = load_topology(REPO / "topology.yaml")


def run(city: City, connector: Connector | dict[str, Any], topology: Topology | None = None,
        **kwargs: Any) -> ConnectorRunner:
    if isinstance(connector, dict):
        connector = Connector.model_validate(connector)
    return ConnectorRunner(connector, topology or city.topology, city.settings,
                           status_interval_s=1.0, **kwargs).start()


@pytest.fixture
def runners() -> Iterator[list[ConnectorRunner]]:
    started: list[ConnectorRunner] = []
    yield started
    for runner in started:
        runner.stop()


def on_topic(city: City, event_type: str) -> list[TailedRecord]:
    """Every record of the event type's canonical topic, in partition order (none yet: [])."""
    try:
        records = list(tail(city.settings, [city.topology.event_type(event_type).topic], exit_at_end=True))
    except KafkaError:  # not created yet
        return []
    return sorted(records, key=lambda r: (r.partition, r.offset))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the fleet and the pacing ------------------------------------------------------------------


def test_the_fleet_is_liuzhou_s_cameras_placed_and_owned_the_same_for_a_seed() -> None:
    fleet = CameraFleet(seed=7)  # after the fifth phase: 6,381 surveillance points and 153 checkpoints
    assert len(fleet) == 6381 + 153 == len(fleet.by_id)
    for camera in fleet.cameras:
        match = re.fullmatch(r"CAM-(CZ|YF|LN|LB|LJ)-(\d{5})", camera.camera_id)
        assert match, camera.camera_id
        assert DISTRICTS[camera.district][2] == match.group(1) and camera.location["district"] == camera.district
    assert len(fleet.checkpoints()) == 153
    assert all(c.owner == "traffic_police" for c in fleet.checkpoints())
    sites = fleet.sites()
    assert len(sites) == 11 and all(len(cameras) == 4 for cameras in sites.values())  # housing's 40+ site cameras
    for cameras in sites.values():  # a site's cameras stand together
        assert len({c.district for c in cameras}) == 1 and len({json.dumps(c.location) for c in cameras}) == 1
        assert {c.owner for c in cameras} == {"housing"}
    # Skynet's own cameras and those the departments attached instead of building their own,
    # every owner a department of the shipped topology.
    owners = {c.owner for c in fleet.cameras}
    assert owners == {"police", "city_management", "street_lighting", "traffic_police", "housing", "fire_brigade",
                      "emergency_management", "environmental_protection", "internet_cafe_supervision"}
    assert owners <= {d.name for d in SHIPPED.departments}
    assert any(c.owner == "traffic_police" and c.kind == "SURVEILLANCE_POINT" for c in fleet.cameras)  # e-police
    assert 0.95 < fleet.availability() < 0.99
    assert sum(c.state == "ONLINE" for c in fleet.cameras) > 5000  # usable at any time
    same, other = CameraFleet(seed=7), CameraFleet(seed=8)
    assert [(c.owner, c.kind, c.location, c.state) for c in same.cameras] == \
        [(c.owner, c.kind, c.location, c.state) for c in fleet.cameras]
    assert [c.owner for c in other.cameras] != [c.owner for c in fleet.cameras]
    with pytest.raises(ValueError, match="at least one camera per district"):
        CameraFleet(3)


def test_the_pacer_spreads_a_rate_and_makes_up_no_backlog() -> None:
    pacer = Pacer(10.0)
    pacer._last -= 0.55
    assert pacer.due() == 5
    assert pacer.due() == 0  # the half event carried over, not yet whole
    pacer._last -= 100  # held up for 100 s: one second's worth, not 1,000 events
    assert pacer.due() == 10


# -- the case system, read by the real REST poller ---------------------------------------------------


def test_the_case_system_read_by_the_real_rest_poller_gives_every_step_of_every_case(
    demo_city: City, runners: list[ConnectorRunner]
) -> None:
    system = CaseSystem(seed=1, new_case_rate=0, step_after_s=(0.02, 0.1)).start()
    try:
        runners.append(run(demo_city, {
            "name": "case-system-poller", "type": "rest_poller", "department": "city_management",
            "publishes": ["city_case"], "config": {"url": system.url, "interval_s": 0.2, "limit": 7}}))
        cases = [system.report()["case_id"] for _ in range(12)]
        wait_until(lambda: system.stats().get("cases_closed") == 12, 20, "every case closed")
        got = wait_until(lambda: (r := on_topic(demo_city, "city_case")) and len(r) >= 60 and r, 30,
                         "60 case changes on the topic")
    finally:
        system.stop()
    assert len(got) == 60  # each step once: none skipped, none repeated
    steps = collections.defaultdict(list)
    for record in got:  # partition order: a case's steps in the order published
        steps[record.value["case_id"]].append(record.value)
    assert sorted(steps) == sorted(cases)
    for versions in steps.values():
        assert [v["status"] for v in versions] == list(LIFECYCLE)
        times = [v["updated_at"] for v in versions]
        assert times == sorted(times) and len(set(times)) == 5
        assert versions[0].get("responsible_unit") is None
        assert all(v["responsible_unit"] for v in versions[1:])
        assert len({v["reported_at"] for v in versions}) == 1


def test_the_case_system_pages_and_refuses_bad_requests() -> None:
    system = CaseSystem(seed=2, new_case_rate=0, token="s3cret").start()
    try:
        for _ in range(8):
            system.report()
        auth = {"Authorization": "Bearer s3cret"}
        wait_until(lambda: len(httpx.get(system.url, headers=auth).json()["items"]) == 8, 5, "the margin passed")
        first = httpx.get(system.url, params={"limit": 5}, headers=auth).json()
        assert len(first["items"]) == 5 and first["next"]
        rest = httpx.get(system.url.split("/api")[0] + first["next"], headers=auth).json()
        assert len(rest["items"]) == 3 and rest["next"] is None
        ids = [i["case_id"] for i in first["items"] + rest["items"]]
        assert len(set(ids)) == 8

        assert httpx.get(system.url).status_code == 401
        assert httpx.get(system.url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        for params, problem in [({"updated_since": "yesterday"}, "not an RFC 3339 time"),
                                ({"after_id": ids[0]}, "after_id needs updated_since"),
                                ({"limit": "0"}, "between 1 and 1000"), ({"limit": "many"}, "not a number")]:
            answer = httpx.get(system.url, params=params, headers=auth)
            assert answer.status_code == 400 and problem in answer.json()["error"], params
        assert httpx.get(system.url.replace("changes", "nothing"), headers=auth).status_code == 404
        assert system.stats()["unauthorized"] == 2 and system.stats()["bad_requests"] == 4
    finally:
        system.stop()


# -- the camera platform, through the real HTTP ingest ----------------------------------------------


def test_the_camera_platform_through_the_real_http_ingest_announces_the_fleet_then_alarms_and_scenarios(
    demo_city: City, runners: list[ConnectorRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_DEMO_INGEST_TOKEN", "demo-token")
    ingest = run(demo_city, {
        "name": "skynet-platform", "type": "http_ingest", "department": "police",
        "publishes": ["camera_alarm", "camera_status"],
        "config": {"port": 0, "path": "/ingest/skynet", "auth": {"token": "env:TEST_DEMO_INGEST_TOKEN"}}})
    runners.append(ingest)
    url = ingest.instance.url  # type: ignore[union-attr]
    fleet = CameraFleet(100, seed=3, initially_down=0)
    platform = CameraPlatform(url, "demo-token", fleet, seed=3, alarm_rate=40, fault_rate=0,
                              scenario_every_s=0.3, storm_alarms=12, storm_seconds=0.3, site_burst_alarms=20,
                              flap_cameras=10, flap_seconds=0.2, flap_outage_s=0.5)
    with platform:
        wait_until(lambda: platform.stats().get("network_flaps", 0) >= 1
                   and platform.stats().get("camera_status_accepted", 0) >= 120
                   and platform.stats().get("camera_alarm_accepted", 0) >= 60, 30, "a flap and its recovery")
    stats = platform.stats()
    assert stats["camera_alarm_sent"] == stats["camera_alarm_accepted"] and "camera_alarm_refused" not in stats
    assert stats["fire_storms"] >= 1 and stats["site_bursts"] >= 1 and fleet.availability() <= 1.0

    statuses = on_topic(demo_city, "camera_status")
    assert len(statuses) == stats["camera_status_accepted"]
    assert {r.value["camera_id"] for r in statuses} == set(fleet.by_id)  # the processors learn every camera
    for record in statuses:
        camera = fleet.by_id[record.value["camera_id"]]
        assert record.value["location"]["district"] == camera.district
        assert record.value["owner_department"] == camera.owner
    alarms = [r.value for r in on_topic(demo_city, "camera_alarm")]
    assert len(alarms) == stats["camera_alarm_accepted"]
    by_type = collections.Counter(a["alarm_type"] for a in alarms)
    assert by_type["CAMERA_OFFLINE"] >= 10  # the flap
    fire = collections.Counter(a["camera_id"] for a in alarms if a["alarm_type"] == "FIRE_SMOKE")
    assert fire.most_common(1)[0][1] >= 12  # a storm: one camera again and again
    assert any(a["severity"] == "CRITICAL" for a in alarms if a["alarm_type"] == "FIRE_SMOKE")
    assert any(a.get("location") is None for a in alarms) and any(a.get("location") for a in alarms)
    assert all(a.get("plate_number") for a in alarms if a["alarm_type"] == "WATCHLIST_VEHICLE")

    intruder = CameraPlatform(url, "wrong-token", fleet, alarm_rate=20, scenario_every_s=0)
    intruder.announced.set()
    with intruder:
        wait_until(lambda: intruder.stats().get("camera_alarm_refused", 0) >= 1, 10, "a refusal")
    assert "401" in (intruder.last_error or "") and "camera_alarm_accepted" not in intruder.stats()


def test_the_camera_platform_waits_retry_after_and_sends_the_same_request_again() -> None:
    answers = [429, 503, 202]
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            status = answers[min(len(bodies), len(answers)) - 1]
            self.send_response(status)
            if status != 202:
                self.send_header("Retry-After", "0.1")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    platform = CameraPlatform(f"http://127.0.0.1:{server.server_address[1]}/ingest", "t", CameraFleet(10))
    try:
        platform.open()
        alarms = [platform.steady_alarm(), platform.steady_alarm()]
        platform.send("camera_alarm", alarms)
    finally:
        platform.close()
        server.shutdown()
        server.server_close()
    assert len(bodies) == 3 and len(set(bodies)) == 1  # the same batch, three times
    assert [json.loads(line)["alarm_id"] for line in bodies[0].splitlines()] == [a["alarm_id"] for a in alarms]
    assert platform.stats()["retried"] == 2 and platform.stats()["camera_alarm_accepted"] == 2


# -- camera devices over the real Mosquitto --------------------------------------------------------------


def test_camera_devices_send_heartbeats_over_mqtt_and_an_offline_camera_is_silent() -> None:
    host, port = mqtt_address()
    prefix = f"test-demo/{uuid.uuid4().hex[:8]}/cameras"
    fleet = CameraFleet(20, seed=4, initially_down=0)
    down = fleet.cameras[:5]
    for camera in down:
        fleet.set_state(camera, "OFFLINE")
    fleet.set_state(fleet.cameras[5], "DEGRADED")
    heard: dict[str, dict[str, Any]] = {}
    subscribed = threading.Event()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-listener-{uuid.uuid4().hex[:8]}")
    listener.on_subscribe = lambda *args: subscribed.set()
    listener.on_message = lambda c, u, m: heard.__setitem__(m.topic, json.loads(m.payload))
    listener.connect(host, port)
    listener.subscribe(f"{prefix}/+/status", qos=1)
    listener.loop_start()
    try:
        assert subscribed.wait(10)
        devices = CameraDevices(fleet, host=host, port=port, topic_prefix=prefix, client_id=f"test-{uuid.uuid4()}",
                                heartbeat_rate=200)
        with devices:
            wait_until(lambda: len(heard) == 15, 15, "a heartbeat of every camera that is up")
            wait_until(lambda: devices.stats().get("acked") == devices.stats()["published"], 10, "every PUBACK")
    finally:
        listener.disconnect()
        listener.loop_stop()
    schema = SHIPPED.schema_for("camera_status")
    assert set(heard) == {devices.topic(c.camera_id) for c in fleet.cameras[5:]}
    for record in heard.values():
        to_datum(schema, record)  # a valid camera_status record, as the MQTT source takes it
    assert heard[devices.topic(fleet.cameras[5].camera_id)]["status"] == "DEGRADED"
    assert devices.stats()["silent"] >= 5

    with pytest.raises(PeerUnreachable, match="cannot reach the MQTT broker"):
        CameraDevices(fleet, port=closed_port()).start()


# -- the departments' endpoints, fed by the real webhook sink ----------------------------------------------


def test_the_endpoints_take_the_real_webhook_sink_s_deliveries_and_count_refusals_repeats_and_disorder(
    demo_city: City, runners: list[ConnectorRunner], topic_factory: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = DepartmentEndpoints(keep_records=True).start()
    try:
        url = endpoints.add("fire-dispatch-webhook", "fire_brigade", "fire-key")
        monkeypatch.setenv("TEST_DEMO_FIRE_KEY", "fire-key")
        topic = topic_factory("fire-alarms", partitions=2)
        records = []
        for n in range(20):
            record = GENERATORS["camera_alarm"](random.Random(n))
            record["camera_id"] = f"CAM-CC-{n % 4:05d}"
            records.append(record)
        produce_wire_records(demo_city.settings, demo_city.topology, topic, records)
        runners.append(run(demo_city, {
            "name": "fire-dispatch-webhook", "type": "http_webhook_sink", "department": "fire_brigade",
            "subscription": "fire-alarms", "config": {"url": url, "hmac_key": "env:TEST_DEMO_FIRE_KEY"}},
            topic=topic))
        wait_until(lambda: endpoints.stats()["delivered"] == 20, 30, "20 deliveries")
        stats = endpoints.stats()["endpoints"]["fire-dispatch-webhook"]
        assert stats == {"department": "fire_brigade", "delivered": 20, "duplicates": 0, "bad_signature": 0,
                         "bad_request": 0, "order_violations": 0}
        assert sorted(r["alarm_id"] for r in endpoints.endpoints["fire-dispatch-webhook"].records) == \
            sorted(r["alarm_id"] for r in records)

        def post(body: bytes, key: str, *, signature: str | None = None, **headers: str) -> int:
            return httpx.post(url, content=body, headers={
                "X-Bus-Signature-256": signature or sign("fire-key", body), "Idempotency-Key": key,
                "Content-Type": "application/json", **headers}).status_code

        body = json.dumps({"alarm_id": "a"}).encode()
        assert post(body, "k1", signature=sign("other-key", body)) == 401
        assert post(b"not json", "k2") == 400
        assert post(body, "k3", **{"ce-subject": "CAM-X", "ce-time": "2026-11-23T08:30:01.000+08:00"}) == 200
        assert post(body, "k3", **{"ce-subject": "CAM-X", "ce-time": "2026-11-23T08:30:01.000+08:00"}) == 200
        assert post(body, "k4", **{"ce-subject": "CAM-X", "ce-time": "2026-11-23T08:30:00.000+08:00"}) == 200
        assert httpx.post(url.replace("fire-dispatch", "nobody"), content=body).status_code == 404
        stats = endpoints.stats()["endpoints"]["fire-dispatch-webhook"]
        assert (stats["bad_signature"], stats["bad_request"], stats["duplicates"], stats["order_violations"]) == \
            (1, 1, 1, 1)
        assert endpoints.endpoints["fire-dispatch-webhook"].examples[0]["key"] == "CAM-X"
    finally:
        for runner in runners:  # the sink first, while its endpoint still answers
            runner.stop()
        endpoints.stop()


# -- the population base in PostgreSQL -------------------------------------------------------------


def test_the_population_registry_loads_in_bulk_then_trickles_changes_of_the_same_people(database: Database) -> None:
    registry = PopulationRegistry(ChangeTable(database.dsn), seed=6, initial_rows=3000, change_rate=200)
    with registry:
        wait_until(lambda: registry.stats().get("changes_written", 0) >= 200, 20, "200 changes after the load")
    rows = database.query("SELECT change_seq, person_id, change_type, national_id, name "
                          "FROM population.person_change ORDER BY change_seq")
    stats = registry.stats()
    assert len(rows) == 3000 + stats["changes_written"]
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    first_seen: dict[str, tuple[str, str]] = {}
    repeats = 0
    for _, person, kind, national_id, name in rows:
        if person in first_seen:  # a later change of someone known: the same identity
            assert first_seen[person] == (national_id, name), person
            assert kind not in ("BIRTH", "MOVE_IN")
            repeats += 1
        first_seen.setdefault(person, (national_id, name))
    assert repeats > 50


# -- the whole demo city against the real connectors --------------------------------------------------------


def test_the_demo_city_feeds_the_real_connectors_of_its_demo_topology(
    demo_city: City, runners: list[ConnectorRunner], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = DemoCityConfig(seed=5, cameras=100, alarm_rate=30, heartbeat_rate=50, scenario_every_s=0,
                            new_case_rate=20, case_step_after_s=(0.1, 0.3), population_rows=500,
                            population_change_rate=20, postgres_dsn=postgres_admin_dsn(),
                            mqtt_host=mqtt_address()[0], mqtt_port=mqtt_address()[1])
    with pytest.raises(SimulatorError, match="open"):
        demo_topology(demo_city.path, DemoCity(config, demo_city.topology), tmp_path)
    demo = DemoCity(config, demo_city.topology).open()
    try:
        assert demo.population_mode == "postgres"
        path = demo_topology(demo_city.path, demo, tmp_path / "demo")
        text = path.read_text(encoding="utf-8")
        assert "# Connectors: the departments' systems." in text  # round-trip: comments kept
        topology = load_topology(path)
        assert [s.model_dump() for s in topology.subscriptions] == \
            [s.model_dump() for s in demo_city.topology.subscriptions]
        refs = re.findall(r"env:([A-Z0-9_]+)", "\n".join(json.dumps(c.config) for c in topology.connectors))
        assert set(refs) == set(demo.env) >= {
            "SKYNET_INGEST_TOKEN", "FIRE_DISPATCH_HMAC_KEY", "TRAFFIC_CHECKPOINT_HMAC_KEY", "EMERGENCY_WALL_HMAC_KEY",
            "LIUNAN_WEBHOOK_HMAC_KEY", "STATS_POPULATION_BASE_DSN", "HEALTH_POPULATION_BASE_DSN",
            "POPULATION_BASE_DSN"}
        assert topology.connector("fire-dispatch-webhook").config["url"] == demo.urls["fire-dispatch-webhook"]
        for name, value in demo.env.items():
            monkeypatch.setenv(name, value)
        cases = demo.simulators["case-system"]
        wait_until(lambda: cases.stats()["changes"] > 0, 10, "the first cases")
        for name in ("skynet-platform", "camera-devices-mqtt", "case-system-poller", "population-base-cdc"):
            runners.append(run(demo_city, topology.connector(name), topology))
        demo.start()
        wait_until(lambda: len(on_topic(demo_city, "population_change")) >= 500, 30, "the population's load")
        wait_until(lambda: runners[1].status().counts.get("published", 0) >= 20, 20, "MQTT heartbeats on the bus")
        wait_until(lambda: len(on_topic(demo_city, "camera_status")) >= 120, 20, "the fleet's statuses")
        wait_until(lambda: len(on_topic(demo_city, "camera_alarm")) >= 20, 20, "alarms")
        wait_until(lambda: on_topic(demo_city, "city_case"), 20, "cases")
        stats = demo.stats()
    finally:
        for runner in runners:
            runner.stop()
        runners.clear()
        demo.stop()
    assert stats["camera-platform"]["camera_status_accepted"] >= 100 and stats["camera-devices"]["published"] >= 20
    assert stats["population-registry"]["initial_rows_written"] == 500
    assert stats["statistics-population-base"] == {"rows": None}  # no router here: the sink table is not made yet
    assert demo.databases.created == {}  # dropped


def test_without_postgresql_the_population_base_drops_csv_exports_for_the_real_file_drop_connector(
    demo_city: City, runners: list[ConnectorRunner], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = DemoCityConfig(seed=9, cameras=10, population_rows=300, population_change_rate=10,
                            new_case_rate=0, drop_folder=tmp_path / "drops",
                            postgres_dsn=f"host=127.0.0.1 port={closed_port()} user=postgres dbname=postgres")
    with DemoCity(config, demo_city.topology) as demo:
        assert demo.population_mode == "file_drop"
        assert not {"STATS_POPULATION_BASE_DSN", "HEALTH_POPULATION_BASE_DSN", "POPULATION_BASE_DSN"} & set(demo.env)
        topology = load_topology(demo_topology(demo_city.path, demo, tmp_path / "demo"))
        connector = topology.connector("population-base-cdc")
        assert connector.type == "file_drop" and connector.config["path"] == str(tmp_path / "drops")
        assert topology.connector("statistics-population-base").config["dsn"] == "env:STATS_POPULATION_BASE_DSN"
        for name, value in demo.env.items():
            monkeypatch.setenv(name, value)
        runners.append(run(demo_city, connector, topology))
        got = wait_until(lambda: (r := on_topic(demo_city, "population_change")) and len(r) >= 310 and r, 30,
                         "the load and some changes")
        assert list((tmp_path / "drops" / "done").glob("population-*.csv"))
    people = collections.Counter(r.value["person_id"] for r in got)
    loaded = {f"P{4502_000000 + n:010d}" for n in range(1, 301)}
    assert loaded <= set(people)  # the load: one change per person, each on the bus
