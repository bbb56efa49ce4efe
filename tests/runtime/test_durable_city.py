"""`bus up --broker kafka --data DIR`: a small city on one machine, durable.

The city runs as a user runs it (the `bus up` command, its own local Apache Kafka in a data
folder), with a PostgreSQL source (the population base's change table) and two JSON-lines
archive sinks (every camera alarm; every population change, identity in clear). It is SIGKILLed as a whole
process tree (the broker included) in the middle of traffic, started again on the same
folder, then stopped with Ctrl-C and started a third time. Each time everything is still
there: the registry's schema ids, the source's position (no row published twice), the
router's, processors' and sinks' offsets (no record archived twice, none missing), and the
processors' camera table (an alarm published without a location after the restart gets the
camera's location, known only from a status event published before the kill).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from ruamel.yaml import YAML

from bus.demo.samples import sample
from bus.kafka.broker import free_port
from bus.kafka.config import KafkaSettings
from bus.publish import Publisher
from tests.connectors.population_table import CREATE, insert, person
from tests.connectors.services import Database, database  # noqa: F401 (fixture)
from tests.fixtures.city import write_city_topology
from bus.topology.validate import load_topology

pytestmark = pytest.mark.integration  # starts its own brokers

REPO = Path(__file__).resolve().parents[2]
CAMERA = "CAM-NH-00042"


def _topology(tmp_path: Path, archive: Path) -> Path:
    path = write_city_topology(tmp_path, f"durable_{uuid.uuid4().hex[:8]}", enriched=True)
    yaml = YAML()
    data = yaml.load(path.read_text())
    data["subscriptions"].append({
        "name": "alarm-archive", "department": "emergency_management", "event_type": "camera_alarm",
        "description": "Every camera alarm, for the durability test's archive.",
        "fields": ["alarm_id", "camera_id", "alarm_type", "severity", "occurred_at", "location", "count"],
    })
    data["connectors"] = [
        {"name": "population-base-cdc", "type": "postgres_source", "department": "civil_affairs",
         "publishes": ["population_change"],
         "config": {"dsn": "env:DURABLE_POPULATION_DSN", "table": "population.person_change",
                    "columns": {"person_no": "person_id"}, "batch_size": 7, "interval_s": 0.2}},
        {"name": "alarm-archive", "type": "jsonl_file_sink", "department": "emergency_management",
         "subscription": "alarm-archive", "config": {"path": str(archive / "alarms")}},
        {"name": "registry-archive", "type": "jsonl_file_sink", "department": "police",
         "subscription": "population-registry", "config": {"path": str(archive / "population")}},
    ]
    with path.open("w") as out:
        yaml.dump(data, out)
    return path


class BusUp:
    """One `bus up --broker kafka` run, its output in a file."""

    def __init__(self, folder: Path, topology: Path, data: Path, ports: dict[str, int], env: dict[str, str]) -> None:
        self.out = folder / f"bus-up-{time.monotonic_ns()}.log"
        with self.out.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bus", "up", "--broker", "kafka", "--data", str(data), "-t", str(topology),
                 "--broker-port", str(ports["broker"]), "--registry-port", str(ports["registry"]),
                 "--web-port", "0", "--page-port", "0"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while "ready: broker" not in self.text():
            assert self.process.poll() is None, f"bus up exited with {self.process.returncode}:\n{self.text()[-4000:]}"
            assert time.monotonic() < deadline, f"bus up not ready within {timeout_s} s:\n{self.text()[-4000:]}"
            time.sleep(0.2)

    def kill_tree(self, *, check: bool = True) -> None:
        """SIGKILL `bus up` and every process under it, the broker's Java included."""
        try:
            root = psutil.Process(self.process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        if check:
            assert any("kafka.Kafka" in " ".join(p.cmdline()) for p in tree[1:]), "the broker is not in bus up's tree"
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(tree, timeout=20)

    def ctrl_c(self, timeout_s: float = 90) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout_s)


def _archived(folder: Path) -> list[dict]:
    lines = []
    for path in sorted(folder.glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def _wait(condition, timeout_s: float, what: str, up: BusUp) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert up.process.poll() is None, f"bus up exited while waiting for {what}:\n{up.text()[-4000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s\n{up.text()[-3000:]}"
        time.sleep(0.2)


def _schema_ids(registry_url: str) -> dict[str, int]:
    subjects = httpx.get(f"{registry_url}/subjects", timeout=10).json()
    return {s: httpx.get(f"{registry_url}/subjects/{s}/versions/latest", timeout=10).json()["id"] for s in subjects}


@pytest.fixture
def started() -> Iterator[list[BusUp]]:
    """Every `bus up` a test starts; whatever still runs when it ends (a failure) is killed."""
    runs: list[BusUp] = []
    yield runs
    for run in runs:
        run.kill_tree(check=False)


def test_a_city_on_local_kafka_keeps_everything_across_a_kill_and_a_restart(
    tmp_path: Path, database: Database, started: list[BusUp]  # noqa: F811 (fixture)
) -> None:
    archive = tmp_path / "archive"
    topology_path = _topology(tmp_path, archive)
    topology = load_topology(topology_path)
    data = tmp_path / "kafka-data"
    ports = {"broker": free_port(), "registry": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env["DURABLE_POPULATION_DSN"] = database.dsn
    settings = KafkaSettings().with_broker(f"127.0.0.1:{ports['broker']}", embedded=False).with_registry(
        f"http://127.0.0.1:{ports['registry']}")
    database.execute(CREATE)
    rng = random.Random(7)

    def alarm(**fields: object) -> dict:
        record = sample("camera_alarm", rng)
        record.update(fields)
        return record

    # 1. The city up; a camera announces its location, alarms and population changes flow.
    up = BusUp(tmp_path, topology_path, data, ports, env)
    started.append(up)
    up.wait_ready()
    schema_ids = _schema_ids(settings.registry_url)
    assert schema_ids, "no schema registered"
    status = sample("camera_status", rng) | {"camera_id": CAMERA, "location": {
        "latitude": 24.30, "longitude": 109.40, "district": "CHENGZHONG", "street": "Longcheng Road", "grid_cell": "CZ-0042"}}
    alarm_ids: list[str] = []
    with Publisher(topology, settings, client_id="durable-test") as publisher:
        publisher.publish("camera_status", "police", status)
        for _ in range(20):
            record = alarm()
            alarm_ids.append(record["alarm_id"])
            publisher.publish("camera_alarm", "police", record)
    insert(database, 1, 20)
    _wait(lambda: len(_archived(archive / "alarms")) >= 20 and len(_archived(archive / "population")) >= 20,
          120, "the first 20 alarms and 20 population changes archived", up)

    # 2. More traffic, and the whole process tree killed in the middle of it.
    with Publisher(topology, settings, client_id="durable-test") as publisher:
        for _ in range(30):
            record = alarm()
            alarm_ids.append(record["alarm_id"])
            publisher.publish("camera_alarm", "police", record)
    insert(database, 21, 30)
    up.kill_tree()

    # 3. Started again on the same folder: the camera's location is remembered by the processors.
    up = BusUp(tmp_path, topology_path, data, ports, env)
    started.append(up)
    up.wait_ready()
    after = _schema_ids(settings.registry_url)
    assert {s: after.get(s) for s in schema_ids} == schema_ids
    assert "data in " + str(data) in up.text()
    no_location = alarm(camera_id=CAMERA, location=None)
    with Publisher(topology, settings, client_id="durable-test") as publisher:
        publisher.publish("camera_alarm", "police", no_location)
    alarm_ids.append(no_location["alarm_id"])
    insert(database, 51, 10)
    _wait(lambda: {a["value"]["alarm_id"] for a in _archived(archive / "alarms")} >= set(alarm_ids)
          and len({p["value"]["person_id"] for p in _archived(archive / "population")}) >= 60,
          180, "every alarm and population change archived after the restart", up)

    # 4. Ctrl-C, and a third start: nothing new is delivered, nothing is lost.
    assert up.ctrl_c() == 0, up.text()[-3000:]
    up = BusUp(tmp_path, topology_path, data, ports, env)
    started.append(up)
    up.wait_ready()
    insert(database, 61, 5)
    _wait(lambda: len({p["value"]["person_id"] for p in _archived(archive / "population")}) >= 65,
          120, "the changes made while the city was down", up)
    assert up.ctrl_c() == 0, up.text()[-3000:]

    # Delivered once in effect: a record the processors emitted again after the kill (they
    # process at least once) keeps its CloudEvents id, the idempotency key every sink hands on;
    # each (alarm, count) version has one id. What the router and the sinks carry is exactly once.
    alarms = _archived(archive / "alarms")
    versions: dict[tuple[str, object], set[str]] = {}
    for line in alarms:
        versions.setdefault((line["value"]["alarm_id"], line["value"].get("count")), set()).add(line["id"])
    assert {v for v, ids in versions.items() if len(ids) > 1} == set(), "a version of an alarm under two ids"
    assert {alarm_id for alarm_id, _ in versions} == set(alarm_ids), "an alarm missing"
    enriched = next(a for a in alarms if a["value"]["alarm_id"] == no_location["alarm_id"])
    assert enriched["value"]["location"]["district"] == "CHENGZHONG", enriched
    people = _archived(archive / "population")
    assert sorted(p["value"]["person_id"] for p in people) == [person(n) for n in range(1, 66)], (
        "a population change published or archived twice, or missing")
    assert len({p["id"] for p in people}) == 65
