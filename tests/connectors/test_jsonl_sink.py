"""The JSON-lines file sink against the real broker and registry, archiving into a folder of
the test. Records are put on a topic of the test in the wire format with CloudEvents
headers, as the router puts them on a subscription topic."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from bus.connect import ConnectorRunner
from bus.demo.samples import GENERATORS
from bus.kafka.config import producer_config
from bus.topology.models import Connector
from connectors.jsonl_sink import ArchiveUnreadable
from tests.connectors.support import (
    all_entry_points,
    committed,
    produce_raw,
    produce_wire_records,
    read_all,
    text_headers,
    wait_until,
)
from tests.fixtures.city import City
from bus.topology.names import dlq_topic


def alarms(n: int, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [GENERATORS["camera_alarm"](rng) for _ in range(n)]


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def archive_runner(connector_city: City, archive: Path) -> Iterator[Callable[..., ConnectorRunner]]:
    runners: list[ConnectorRunner] = []

    def make(topic: str, *, name: str = "alarm-archive", **config: Any) -> ConnectorRunner:
        connector = Connector.model_validate({
            "name": name, "type": "jsonl_file_sink", "department": "fire_brigade", "subscription": "fire-alarms",
            "config": {"path": str(archive), "prefix": "alarms", **config},
        })
        runner = ConnectorRunner(connector, connector_city.topology, connector_city.settings, topic=topic,
                                 entry_points=all_entry_points(), status_interval_s=1.0)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


def lines(archive: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(archive.glob("alarms-*.jsonl")):
        out += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return out


def positions(archive: Path) -> list[tuple[int, int]]:
    return [(e["partition"], e["offset"]) for e in lines(archive)]


def test_each_record_is_one_line_with_its_cloud_events_attributes_and_position(
    connector_city: City, topic_factory: Callable[..., str], archive: Path,
    archive_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub", partitions=2)
    produced = produce_wire_records(connector_city.settings, connector_city.topology, topic, alarms(10))
    runner = archive_runner(topic).start()
    wait_until(lambda: sum(committed(connector_city.settings, runner.group_id, topic, 2)) == 10, 30, "commits")

    by_id = {e["id"]: e for e in lines(archive)}
    assert len(by_id) == 10
    for p in produced:
        entry = by_id[p.ce_id]
        assert (entry["topic"], entry["partition"], entry["offset"]) == (topic, p.partition, p.offset)
        assert entry["key"] == p.key == entry["subject"]
        assert entry["type"] == "camera_alarm" and entry["source"] == "police"
        assert entry["time"].endswith("Z") and entry["traceparent"].startswith("00-")
        assert entry["value"]["alarm_id"] == p.record["alarm_id"]
    for partition in (0, 1):
        offsets = [o for p, o in positions(archive) if p == partition]
        assert offsets == sorted(offsets)  # in offset order within a partition
    assert runner.status().detail["written"] == 10


def test_files_rotate_by_size_and_a_replay_from_the_beginning_adds_nothing(
    connector_city: City, topic_factory: Callable[..., str], archive: Path,
    archive_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub", partitions=2)
    produce_wire_records(connector_city.settings, connector_city.topology, topic, alarms(30))
    first = archive_runner(topic, max_bytes=4096).start()
    wait_until(lambda: sum(committed(connector_city.settings, first.group_id, topic, 2)) == 30, 30, "commits")
    first.stop()
    files = sorted(archive.glob("alarms-*.jsonl"))
    assert len(files) >= 3
    assert [f.name.split("-")[1] for f in files] == [f"{n:06d}" for n in range(1, len(files) + 1)]
    assert all(f.stat().st_size <= 4096 for f in files)
    assert len(positions(archive)) == 30

    # Another group (a new connector name) on the same archive reads the topic from the start.
    produce_wire_records(connector_city.settings, connector_city.topology, topic, alarms(5, seed=12))
    replay = archive_runner(topic, name="alarm-archive-replay", max_bytes=4096).start()
    wait_until(lambda: sum(committed(connector_city.settings, replay.group_id, topic, 2)) == 35, 30, "the replay")
    assert replay.status().detail["skipped_as_already_archived"] == 30
    assert replay.status().detail["written"] == 5
    seen = Counter(positions(archive))
    assert len(seen) == 35 and max(seen.values()) == 1


def test_a_line_cut_short_by_a_crash_is_removed_and_its_record_written_again(
    connector_city: City, topic_factory: Callable[..., str], archive: Path,
    archive_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub")
    produced = produce_wire_records(connector_city.settings, connector_city.topology, topic, alarms(4))
    first = archive_runner(topic).start()
    wait_until(lambda: committed(connector_city.settings, first.group_id, topic) == [4], 30, "commits")
    first.stop()
    # As if the process died writing a fifth record the group never committed.
    newest = max(archive.glob("alarms-*.jsonl"))
    entries = newest.read_text().splitlines()
    newest.write_text("\n".join(entries[:3]) + "\n" + entries[3][:40])
    replay = archive_runner(topic, name="alarm-archive-after-crash").start()
    wait_until(lambda: committed(connector_city.settings, replay.group_id, topic) == [4], 30, "the replay")
    assert [e["id"] for e in lines(archive)] == [p.ce_id for p in produced]
    assert replay.status().detail["written"] == 1


def test_tombstones_are_archived_and_undecodable_values_go_to_the_dead_letter_topic(
    connector_city: City, topic_factory: Callable[..., str], archive: Path,
    archive_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub")
    produce_wire_records(connector_city.settings, connector_city.topology, topic, alarms(1))
    produce_raw(connector_city.settings, topic, b"CAM-CC-00001", b"not the wire format")
    producer = Producer(producer_config(connector_city.settings, client_id="test-tombstone"))
    producer.produce(topic, key=b"CAM-CC-00002", value=None)
    assert producer.flush(30) == 0
    runner = archive_runner(topic).start()
    letters = read_all(connector_city.settings, dlq_topic(connector_city.topology.namespace, runner.name), 1)
    assert len(letters) == 1 and text_headers(letters[0])["__connect.errors.offset"] == "1"
    wait_until(lambda: committed(connector_city.settings, runner.group_id, topic) == [3], 30, "commits")
    archived = lines(archive)
    assert [e["offset"] for e in archived] == [0, 2]
    assert archived[1]["value"] is None and archived[1]["key"] == "CAM-CC-00002"


def test_a_foreign_file_named_like_the_archive_stops_the_start_with_what_to_do(
    connector_city: City, topic_factory: Callable[..., str], archive: Path,
    archive_runner: Callable[..., ConnectorRunner],
) -> None:
    archive.mkdir()
    (archive / "alarms-000001-20261123T000000Z.jsonl").write_text('{"something": "else"}\n{"more": 1}\n')
    with pytest.raises(ArchiveUnreadable, match="line 1 is not an archive line.*move the file out"):
        archive_runner(topic_factory("sub")).start()
