"""The processors' faust worker against the real broker: registry import and camera_status
feed the camera table, alarms come out enriched at once (a storm's update when its window
closes), a flap as one incident; the maintenance SLA escalates an unanswered fault and the
fleet availability is published.
The worker runs as a subprocess with a deadline; time is driven by the records' event times."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from ruamel.yaml import YAML

from bus.consume.decoder import Decoder
from bus.kafka.admin import admin, delete_topics
from bus.kafka.config import KafkaSettings, consumer_config
from bus.processors.app import (
    app_id,
    ensure_processor_topics,
    import_cameras,
    processor_topics,
)
from bus.processors.cameras import CameraInfo
from bus.processors.sla import breach_case_id
from bus.processors.storms import FLAP_CAMERA_ID, iso_ms
from bus.publish import Publisher
from bus.registry.client import registry_client
from bus.schemas.records import to_json
from bus.topology.models import Topology
from tests.fixtures.city import City
from bus.topology.validate import load_topology

REPO = Path(__file__).resolve().parents[2]
T0 = int(dt.datetime(2026, 11, 23, 0, 30, tzinfo=dt.timezone.utc).timestamp() * 1000)
LOC_A = {"latitude": 23.02, "longitude": 113.12, "district": "LIUNAN", "street": "Feie Rd", "grid_cell": "LN-0412"}
LOC_B = {"latitude": 22.8, "longitude": 113.29, "district": "YUFENG", "street": None, "grid_cell": None}
CAM_A, CAM_B, CAM_C, CAM_D = "CAM-CC-00012", "CAM-SD-00044", "CAM-NH-09999", "CAM-GM-00001"


@pytest.fixture
def one_partition_city(city: City) -> Topology:
    """The test city with one camera_alarm partition: a total order of alarms, so that the
    event-time assertions are deterministic (the merger is partition-aware in production)."""
    yaml = YAML()
    data = yaml.load(city.path.read_text(encoding="utf-8"))
    for et in data["event_types"]:
        if et["name"] == "camera_alarm":
            et["partitions"] = 1
    with city.path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return load_topology(city.path)


@dataclass
class Worker:
    start: Callable[[], None]
    stop: Callable[[], None]
    kill: Callable[[], None]


@pytest.fixture
def worker(one_partition_city: Topology, city: City, tmp_path: Path) -> Iterator["Worker"]:
    """Start the processors as a subprocess; stopped (SIGTERM, then SIGKILL) at the end."""
    procs: list[subprocess.Popen] = []
    settings = city.settings
    env = dict(
        os.environ,
        BUS_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        BUS_KAFKA_PROFILE=str(settings.kafka_profile),
        BUS_REGISTRY_URL=settings.registry_url,
    )
    log = (tmp_path / "worker.log").open("wb")

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bus.processors", str(city.path), "none", "INFO"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        )

    def stop() -> None:
        while procs:
            proc = procs.pop()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def kill() -> None:
        proc = procs.pop()
        proc.kill()
        proc.wait(5)

    yield Worker(start, stop, kill)
    stop()
    log.close()
    topics = processor_topics(one_partition_city)
    delete_topics(settings, [topics.enriched, topics.camera_import, topics.sla, topics.availability,
                             *(f"{app_id(one_partition_city)}-{t}" for t in (
                                 "__assignor-__leader", "cameras-changelog", "camera_sla-changelog",
                                 "storm_windows-changelog"))])


def read_until(settings: KafkaSettings, topic: str, done: Callable[[list], bool], deadline_s: float, decode) -> list:
    deadline = time.monotonic() + deadline_s
    client = admin(settings)
    # a consumer subscribed to a missing topic would not see it created for minutes (metadata refresh)
    while topic not in client.list_topics(timeout=5).topics:
        assert time.monotonic() < deadline, f"topic {topic} was not created within {deadline_s} s"
        time.sleep(0.2)  # polling for a condition, bounded by the deadline
    consumer = Consumer(consumer_config(settings, group_id=f"test-{uuid.uuid4().hex[:8]}", client_id="test-reader"))
    consumer.subscribe([topic])
    seen: list = []
    try:
        while time.monotonic() < deadline and not done(seen):
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            seen.append(decode(msg))
    finally:
        consumer.close()
    return seen


def committed(settings: KafkaSettings, group: str, topic: str, partitions: int) -> int:
    """Records of ``topic`` the group has committed, summed over partitions."""
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="test-committed"))
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return sum(tp.offset for tp in offsets if tp.offset > 0)


def alarm(camera: str, kind: str, at_s: float, **extra: object) -> dict:
    record = {
        "alarm_id": str(uuid.uuid4()),
        "camera_id": camera,
        "alarm_type": kind,
        "severity": "MEDIUM",
        "occurred_at": iso_ms(T0 + int(at_s * 1000)),
    }
    record.update(extra)
    return record


def last_versions(seen: list[tuple[dict, dict]]) -> dict[str, int]:
    """alarm_id -> count of the last version read (what a consumer upserting by id holds)."""
    return {record["alarm_id"]: record["count"] for record, _ in seen}


def wait_for_restarted_worker(settings: KafkaSettings, publisher: Publisher, changelog: str,
                              within_s: float = 90) -> None:
    """Wait until a restarted worker processes records again (it has recovered and sought its
    committed offsets). A record published while it starts can be lost (faust-streaming #216,
    3 of 120 alarms once, a whole probe in another run), so a probe goes out
    every 10 s, each on a camera of its own, until one reaches the camera table's changelog.
    Only this call's probes count: the changelog still holds those an earlier worker processed."""
    prefix = f"CAM-PROBE-{uuid.uuid4().hex[:8].upper()}-"
    deadline, probes, keys = time.monotonic() + within_s, 0, []
    while time.monotonic() < deadline and not any(k.startswith(prefix) for k in keys):
        probes += 1
        publisher.publish("camera_status", "police", {"camera_id": f"{prefix}{probes:05d}", "status": "ONLINE",
                                                      "reported_at": iso_ms(T0 - 3_600_000)})
        keys = read_until(settings, changelog, lambda seen: any(k.startswith(prefix) for k in seen),
                          min(10, max(0.5, deadline - time.monotonic())), lambda m: json.loads(m.key()))
    assert any(k.startswith(prefix) for k in keys), (
        f"the restarted worker processed none of {probes} probes within {within_s} s")


def test_a_restarted_worker_recovers_every_camera_from_a_batched_changelog(
    one_partition_city: Topology, city: City, worker: Worker
) -> None:
    """faust writes the camera table's changelog in multi-record batches; the embedded broker's
    high watermark then stops short of the last batch's records, and a recovery that trusted it
    came back without them. The cameras past the reported high watermarks are the ones that
    would be missing. Whether a partition's last batch holds several records is up to faust's
    timing, so cameras are imported in rounds of 400 until some are hidden that way."""
    topology, settings = one_partition_city, city.settings
    topics = ensure_processor_topics(topology, settings)
    decoder = Decoder(registry_client(settings))
    changelog = f"{app_id(topology)}-cameras-changelog"
    cameras: list[str] = []
    hidden: set[str] = set()
    for round_ in range(5):
        batch = [f"CAM-CC-{n:05d}" for n in range(20_000 + 400 * round_, 20_400 + 400 * round_)]
        assert import_cameras(topology, settings, [
            CameraInfo(c, location=LOC_A, owner_department="city_management") for c in batch]) == len(batch)
        cameras += batch
        worker.start()
        records = read_until(settings, changelog, lambda seen: set(cameras) <= {k for k, _, _ in seen}, 60,
                             lambda m: (json.loads(m.key()), m.partition(), m.offset()))
        assert set(cameras) <= {k for k, _, _ in records}, "the camera table was not fed within 60 s"
        worker.stop()
        assert committed(settings, app_id(topology), topics.camera_import, topics.status_partitions) == len(cameras)
        if not settings.embedded:
            hidden = set(cameras[-30:])  # Kafka's high watermark is right: any cameras will do
            break
        consumer = Consumer(consumer_config(settings, group_id="test-hw", client_id="test-hw"))
        reported = [consumer.get_watermark_offsets(TopicPartition(changelog, p), timeout=10)[1]
                    for p in range(topics.status_partitions)]
        consumer.close()
        below = {k for k, p, o in records if o < reported[p]}
        hidden = {k for k, p, o in records if o >= reported[p]} - below
        if hidden:
            break
    assert hidden, "five rounds of 400 cameras were all written one record per batch: nothing to prove here"
    with Publisher(topology, settings) as publisher:
        worker.start()
        wait_for_restarted_worker(settings, publisher, changelog)
        last = sorted(hidden)[:30]
        for n, camera in enumerate(last):
            publisher.publish("camera_alarm", "police", alarm(camera, "INTRUSION", n))
    out = read_until(settings, topics.enriched, lambda seen: {r["camera_id"] for r, _ in seen} >= set(last), 40,
                     lambda m: (to_json(decoder.decode(m.value())), dict(m.headers())))
    districts = {r["camera_id"]: (r["location"] or {}).get("district") for r, _ in out}
    assert {c: districts.get(c) for c in last} == {c: "LIUNAN" for c in last}


@pytest.mark.parametrize("letting_go", ["it stops", "another worker joins", "it is killed"])
def test_what_open_windows_held_is_published_whatever_becomes_of_the_worker(
    one_partition_city: Topology, city: City, worker: Worker, letting_go: str
) -> None:
    """Offline alarms wait for the flap decision and a storm's update for its window's close, but
    their offsets are committed when they are read: nobody reads them again. A worker that stops
    (bus up's Ctrl-C, a redeploy) or gives its partitions up in a rebalance publishes them
    first; after a SIGKILL the next worker restores the windows from their changelog and
    publishes them when event time closes them."""
    topology, settings = one_partition_city, city.settings
    topics = ensure_processor_topics(topology, settings)
    decoder = Decoder(registry_client(settings))
    offline = [alarm(f"CAM-SD-{n:05d}", "CAMERA_OFFLINE", 10 + n) for n in range(3)]  # fewer than a flap
    storm = [alarm(CAM_A, "INTRUSION", at) for at in (10, 15)]
    with Publisher(topology, settings) as publisher:
        worker.start()
        wait_for_restarted_worker(settings, publisher, f"{app_id(topology)}-cameras-changelog")
        for record in [storm[0], *offline, storm[1]]:
            publisher.publish("camera_alarm", "police", record)
    deadline = time.monotonic() + 30
    while committed(settings, app_id(topology), topics.alarms, 1) < 5:
        assert time.monotonic() < deadline, "the worker did not commit the 5 alarms within 30 s"
        time.sleep(0.2)  # polling for a condition, bounded by the deadline
    decode = lambda m: to_json(decoder.decode(m.value()))  # noqa: E731
    before = read_until(settings, topics.enriched, lambda seen: len(seen) >= 1, 30, decode)
    assert [(r["alarm_id"], r["count"]) for r in before] == [(storm[0]["alarm_id"], 1)], (
        "only the storm's first alarm goes out at once; the others are held (nothing to prove otherwise)")
    expected = [(storm[0]["alarm_id"], 1), (storm[0]["alarm_id"], 2), *((a["alarm_id"], 1) for a in offline)]
    if letting_go == "it stops":
        worker.stop()
    elif letting_go == "another worker joins":
        worker.start()  # the second worker's join revokes the first one's partition
    else:
        worker.kill()
        with Publisher(topology, settings) as publisher:
            worker.start()
            # Kafka holds a killed member's partitions until its session times out, and the restarted
            # worker's join waits for that: faust's default 60 s would fail this, the bus's 10 s not
            wait_for_restarted_worker(settings, publisher, f"{app_id(topology)}-cameras-changelog", within_s=40)
            closer = alarm(CAM_C, "TAMPERING", 300)  # event time passes every window's end
            publisher.publish("camera_alarm", "police", closer)
        expected.append((closer["alarm_id"], 1))
    after = read_until(settings, topics.enriched, lambda seen: len(seen) >= len(expected), 40, decode)
    assert sorted((r["alarm_id"], r["count"]) for r in after) == sorted(expected)


def test_enrichment_storms_and_flap(one_partition_city: Topology, city: City, worker: Worker) -> None:
    topology, settings = one_partition_city, city.settings
    topics = ensure_processor_topics(topology, settings)
    case_topic = topology.event_type("city_case").topic
    decoder = Decoder(registry_client(settings))

    def decode_alarm(m) -> tuple[dict, dict]:
        return to_json(decoder.decode(m.value())), dict(m.headers())

    def decode_case(m) -> dict:
        return to_json(decoder.decode(m.value()))

    # the registry import knows camera A; camera B is known only from its status event
    assert import_cameras(topology, settings, [CameraInfo(CAM_A, location=LOC_A, owner_department="city_management")]) == 1
    with Publisher(topology, settings) as publisher:
        publisher.publish(
            "camera_status", "police",
            {"camera_id": CAM_B, "status": "ONLINE", "reported_at": iso_ms(T0 - 3_600_000), "location": LOC_B,
             "owner_department": "police"},
        )
        worker.start()
        changelog = f"{app_id(topology)}-cameras-changelog"
        keys = read_until(settings, changelog, lambda seen: {CAM_A, CAM_B} <= set(seen), 60,
                          lambda m: json.loads(m.key()))
        assert {CAM_A, CAM_B} <= set(keys), "the camera table was not fed within 60 s"
        # a restarted worker recovers the table from its changelog before it reads alarms
        worker.stop()
        assert committed(settings, app_id(topology), topics.camera_import, topics.status_partitions) == 1, (
            "the import record must be committed, so that the restarted worker gets camera A only from the changelog"
        )
        worker.start()
        wait_for_restarted_worker(settings, publisher, changelog)

        # A fire alarm is written, and its cases opened, as soon as it is read: the worker runs
        # without idle flush ("none") and no later record moves event time, so nothing but the
        # record itself can release it.
        fire = alarm(CAM_B, "FIRE_SMOKE", 1, severity="HIGH")
        publisher.publish("camera_alarm", "police", fire)
        early = read_until(settings, topics.enriched, lambda seen: len(seen) >= 1, 30, decode_alarm)
        assert [(r["alarm_id"], r["count"]) for r, _ in early] == [(fire["alarm_id"], 1)], "the fire alarm was held"
        early_cases = read_until(settings, case_topic, lambda seen: len(seen) >= 2, 30, decode_case)
        assert sorted((c["responsible_unit"], c["related_alarm_id"]) for c in early_cases) == [
            ("district_yufeng", fire["alarm_id"]), ("fire_brigade", fire["alarm_id"]),
        ]

        for at in (0, 5, 20, 40, 59):
            publisher.publish("camera_alarm", "police", alarm(CAM_A, "INTRUSION", at))
        publisher.publish("camera_alarm", "police", alarm(CAM_B, "FIRE_SMOKE", 30, severity="CRITICAL"))  # fire's storm
        publisher.publish("camera_alarm", "police", alarm(CAM_C, "TAMPERING", 2))
        summary = publisher.publish_each(
            "camera_alarm", "police",
            [(i, alarm(f"CAM-SD-{i:05d}", "CAMERA_OFFLINE", 70 + i * 0.025)) for i in range(120)],
        )
        assert (summary.published, summary.rejected) == (120, [])
        last = alarm(CAM_A, "FIRE_SMOKE", 300)  # moves event time on (closes the flap window); opens cases at once
        publisher.publish("camera_alarm", "police", last)

    # 129 raw alarms; a consumer upserting by alarm_id holds the last version of each, and those sum to 129
    out = read_until(settings, topics.enriched, lambda seen: sum(last_versions(seen).values()) >= 129, 40,
                     decode_alarm)
    versions: dict[str, list[tuple[dict, dict]]] = {}
    for record, headers in out:
        versions.setdefault(record["alarm_id"], []).append((record, headers))
    by_camera = {v[0][0]["camera_id"]: v for v in versions.values() if v[0][0]["alarm_type"] != "FIRE_SMOKE"}
    assert sorted(by_camera) == sorted([CAM_A, CAM_C, FLAP_CAMERA_ID]), out
    (a_first, headers), (a, _) = by_camera[CAM_A]  # the first at once, the update when the window closed
    assert (a_first["count"], a["count"], a["alarm_id"]) == (1, 5, a_first["alarm_id"])
    assert (a["location"]["district"], a["owner_department"]) == ("LIUNAN", "city_management")
    assert headers["ce_type"] == b"camera_alarm" and headers["ce_source"] == b"police"
    (b_first, b_first_headers), (b, b_headers) = versions[fire["alarm_id"]]
    assert (b_first["count"], b_first["severity"], b["count"], b["severity"]) == (1, "HIGH", 2, "CRITICAL")
    assert (b["location"]["district"], b["owner_department"]) == ("YUFENG", "police")
    assert b_headers["ce_id"] != b_first_headers["ce_id"]  # an idempotent sink keeps the update
    ((c, _),) = by_camera[CAM_C]
    assert (c["count"], c["location"]) == (1, None)  # unknown camera: passes as it came
    ((flap, _),) = by_camera[FLAP_CAMERA_ID]
    assert flap["count"] == 120 and "120 cameras offline" in flap["description"], [(r["camera_id"], r["count"], r.get("description")) for r, _ in out]
    assert [r["count"] for r, _ in versions[last["alarm_id"]]] == [1]
    assert len(out) == 7
    # linkage: the fire storm's update opened no second case (it went out before the last alarm,
    # whose two cases are awaited); the last fire alarm opened its own two
    cases = read_until(settings, case_topic,
                       lambda seen: len(seen) >= 4 and sum(c["related_alarm_id"] == last["alarm_id"] for c in seen) >= 2,
                       30, decode_case)
    assert sorted((c["responsible_unit"], c["category"], c["related_alarm_id"]) for c in cases) == sorted([
        ("district_liunan", "FIRE_HAZARD", last["alarm_id"]),
        ("district_yufeng", "FIRE_HAZARD", fire["alarm_id"]),
        ("fire_brigade", "FIRE_HAZARD", fire["alarm_id"]),
        ("fire_brigade", "FIRE_HAZARD", last["alarm_id"]),
    ])


def test_sla_breach_and_availability(one_partition_city: Topology, city: City, worker: Worker) -> None:
    topology, settings = one_partition_city, city.settings
    topics = ensure_processor_topics(topology, settings)
    maintenance_case = str(uuid.uuid4())
    hour = 3_600_000

    def status(camera: str, state: str, at: int, location: dict) -> dict:
        return {"camera_id": camera, "status": state, "reported_at": iso_ms(at), "location": location,
                "owner_department": "city_management"}

    with Publisher(topology, settings) as publisher:
        publisher.publish("camera_status", "police", status(CAM_A, "OFFLINE", T0, LOC_A))  # never answered
        publisher.publish("camera_status", "police", status(CAM_B, "ONLINE", T0, LOC_B))
        publisher.publish("camera_status", "police", status(CAM_D, "OFFLINE", T0, LOC_B))  # answered by its case
        publisher.publish("city_case", "city_management", {
            "case_id": maintenance_case, "status": "DISPATCHED", "category": "CAMERA_FAULT", "title": "camera offline",
            "source": "LINKAGE", "district": "YUFENG", "responsible_unit": "city_management", "component_id": CAM_D,
            "reported_at": iso_ms(T0), "updated_at": iso_ms(T0 + hour),
        })
        worker.start()
        availability = read_until(
            settings, topics.availability, lambda seen: ("all", {"online": 1, "total": 3}) in seen, 90,
            lambda m: (m.key().decode(), {k: v for k, v in json.loads(m.value()).items() if k in ("online", "total")}),
        )
        assert ("all", {"online": 1, "total": 3}) in availability, availability
        assert ("YUFENG", {"online": 1, "total": 2}) in availability
        assert ("LIUNAN", {"online": 0, "total": 1}) in availability
        # 25 h later by another camera's record: A's answer deadline has passed, D's was kept
        publisher.publish("camera_status", "police", status(CAM_B, "ONLINE", T0 + 25 * hour, LOC_B))

    decoder = Decoder(registry_client(settings))
    cases = read_until(settings, topology.event_type("city_case").topic,
                       lambda seen: any(c["level"] == "CITY" for c in seen), 60,
                       lambda m: to_json(decoder.decode(m.value())))
    escalations = [(c["case_id"], c["component_id"], c["responsible_unit"]) for c in cases if c["level"] == "CITY"]
    assert escalations == [(breach_case_id(CAM_A, T0, "answer"), CAM_A, "city_management")], cases
