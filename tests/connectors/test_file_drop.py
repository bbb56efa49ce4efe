"""The file-drop source against the real broker and registry, on files in a folder of the test."""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.connect import ConnectorConfigInvalid, ConnectorRunner
from bus.connect.base import SourceContext
from bus.connect.config import parse_config
from bus.connect.monitor import ConnectorMonitor
from bus.retry import RetryPolicy
from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.publish.exceptions import PublishRefused
from bus.topology.models import Connector
from connectors.file_drop import FileDrop, FileDropConfig, FileRejected, RowInvalid
from tests.connectors.support import (
    all_entry_points,
    read_all,
    text_headers,
    wait_until,
)
from tests.fixtures.city import City
from bus.topology.names import dlq_topic

HEADER = "alarm_id,camera_id,alarm_type,severity,occurred_at,location.latitude,location.longitude," \
         "location.district,location.street,owner_department,confidence,count,description"


def alarm(n: int) -> dict[str, Any]:
    return GENERATORS["camera_alarm"](random.Random(n))


def csv_line(record: dict[str, Any]) -> str:
    loc = record.get("location") or {}
    cells = [record["alarm_id"], record["camera_id"], record["alarm_type"], record["severity"], record["occurred_at"],
             loc.get("latitude", ""), loc.get("longitude", ""), loc.get("district", ""), loc.get("street") or "",
             record.get("owner_department") or "", record.get("confidence") or "", record.get("count", ""),
             record.get("description") or ""]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue()


def jsonl(records: list[Any]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


@pytest.fixture
def file_runner(connector_city: City, drop: Path) -> Iterator[Callable[..., ConnectorRunner]]:
    runners: list[ConnectorRunner] = []

    def make(**config: Any) -> ConnectorRunner:
        connector = Connector.model_validate({
            "name": "legacy-alarm-export", "type": "file_drop", "department": "police",
            "publishes": ["camera_alarm", "camera_status"],
            "config": {"path": str(drop), "event_type": "camera_alarm", "settle_s": 0, "poll_interval_s": 0.1,
                       **config},
        })
        runner = ConnectorRunner(connector, connector_city.topology, connector_city.settings,
                                 entry_points=all_entry_points(), status_interval_s=1.0)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


def alarms_on_topic(city: City) -> list[Any]:
    return list(tail(city.settings, [city.topology.event_type("camera_alarm").topic], exit_at_end=True))


def detail(runner: ConnectorRunner) -> dict[str, Any]:
    return runner.status().detail


def test_csv_rows_are_converted_by_the_schema_and_published_and_the_file_moves_to_done(
    connector_city: City, drop: Path, file_runner: Callable[..., ConnectorRunner],
) -> None:
    records = [alarm(n) | {"count": n + 2, "description": f"seen, {n} times"} for n in range(3)]
    records[1] = records[1] | {"location": None, "confidence": None, "owner_department": None, "description": None}
    lines = [HEADER, *(csv_line(r) for r in records)]
    lines[2] = lines[2].replace(records[1]["occurred_at"], "1795401000000")  # epoch milliseconds
    lines[3] = lines[3].replace(records[2]["occurred_at"], "2026-11-23 08:30:00")  # naive, in naive_timezone
    (drop / "alarms-20261123.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    runner = file_runner(pattern="*.csv", naive_timezone="Asia/Shanghai").start()
    wait_until(lambda: detail(runner)["files_done"] == 1, 20, "the file done")
    got = {g.value["alarm_id"]: g.value for g in alarms_on_topic(connector_city)}
    assert set(got) == {r["alarm_id"] for r in records}
    first = got[records[0]["alarm_id"]]
    assert first["location"]["district"] == records[0]["location"]["district"]
    assert first["location"]["latitude"] == pytest.approx(records[0]["location"]["latitude"])
    assert first["count"] == 2 and first["description"] == "seen, 0 times"
    assert first["alarm_type"] == records[0]["alarm_type"]
    empty = got[records[1]["alarm_id"]]
    assert empty["location"] is None and empty["confidence"] is None and empty["owner_department"] is None
    assert empty["occurred_at"] == "2026-11-23T02:30:00.000Z"
    assert got[records[2]["alarm_id"]]["occurred_at"] == "2026-11-23T00:30:00.000Z"  # 08:30 in Shanghai

    assert not (drop / "alarms-20261123.csv").exists()
    assert (drop / "done" / "alarms-20261123.csv").exists()
    assert runner.status().counts["published"] == 3 and runner.status().counts["dead_lettered"] == 0


def test_bad_rows_go_to_the_dead_letter_topic_with_file_and_line_and_the_others_are_published(
    connector_city: City, drop: Path, file_runner: Callable[..., ConnectorRunner],
) -> None:
    good = [alarm(n) for n in range(10, 14)]
    lines = [good[0], "{not json", good[1], "", alarm(99) | {"severity": "APOCALYPTIC"}, good[2], "[1, 2]", good[3]]
    (drop / "export.jsonl").write_text(jsonl(lines), encoding="utf-8")
    (drop / "export.jsonl").write_bytes((drop / "export.jsonl").read_bytes() + b'{"camera_id": "\xff"}\n')
    runner = file_runner().start()
    wait_until(lambda: detail(runner)["files_done"] == 1, 20, "the file done")

    letters = read_all(connector_city.settings, dlq_topic(connector_city.topology.namespace, runner.name), 4)
    assert len(letters) == 4
    by_line = {text_headers(m)["file_drop_line"]: m for m in letters}
    assert set(by_line) == {"2", "5", "7", "9"}
    not_json = text_headers(by_line["2"])
    assert not_json["file_drop_file"] == "export.jsonl"
    assert not_json["__connect.errors.topic"] == "export.jsonl"
    assert not_json["__connect.errors.offset"] == "2"
    assert not_json["__connect.errors.stage"] == "TASK_POLL"
    assert not_json["__connect.errors.connector.name"] == "legacy-alarm-export"
    assert "line 2 is not JSON" in not_json["__connect.errors.exception.message"]
    assert by_line["2"].value() == b"{not json"
    assert by_line["2"].key() == b"export.jsonl"
    assert "APOCALYPTIC" in text_headers(by_line["5"])["__connect.errors.exception.message"]
    assert "not an object" in text_headers(by_line["7"])["__connect.errors.exception.message"]
    assert "not valid utf-8" in text_headers(by_line["9"])["__connect.errors.exception.message"]

    assert sorted(g.value["alarm_id"] for g in alarms_on_topic(connector_city)) == sorted(r["alarm_id"] for r in good)
    assert detail(runner)["rows_dead_lettered"] == 4 and detail(runner)["rows_published"] == 4


def test_a_csv_whose_header_does_not_fit_the_schema_is_rejected_whole(
    connector_city: City, drop: Path, file_runner: Callable[..., ConnectorRunner],
) -> None:
    (drop / "wrong.csv").write_text("alarm_id,camera,alarm_type\n1,2,3\n", encoding="utf-8")
    (drop / "right.csv").write_text(f"{HEADER}\n{csv_line(alarm(5))}\n", encoding="utf-8")
    runner = file_runner(pattern="*.csv").start()
    wait_until(lambda: detail(runner)["files_done"] == 1 and detail(runner)["files_rejected"] == 1, 20, "both files")
    assert (drop / "rejected" / "wrong.csv").exists() and (drop / "done" / "right.csv").exists()
    letters = read_all(connector_city.settings, dlq_topic(connector_city.topology.namespace, runner.name), 1)
    assert len(letters) == 1
    headers = text_headers(letters[0])
    assert headers["file_drop_file"] == "wrong.csv" and headers["file_drop_line"] == "1"
    message = headers["__connect.errors.exception.message"]
    assert "column 'camera' is no field of camera_alarm" in message
    assert "required field severity has no column" in message
    assert [g.value["alarm_id"] for g in alarms_on_topic(connector_city)] == [alarm(5)["alarm_id"]]


def test_bad_csv_rows_are_dead_lettered_one_by_one(
    connector_city: City, drop: Path, file_runner: Callable[..., ConnectorRunner],
) -> None:
    good = [alarm(n) for n in range(20, 23)]
    huge = csv_line(alarm(30) | {"description": "x" * 200_000})
    short = ",".join(csv_line(alarm(31)).split(",")[:4])
    bad_count = csv_line(alarm(32) | {"count": "many"})
    rows = [HEADER, csv_line(good[0]), huge, csv_line(good[1]), short, bad_count, csv_line(good[2])]
    (drop / "mixed.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    runner = file_runner(pattern="*.csv").start()
    wait_until(lambda: detail(runner)["files_done"] == 1, 20, "the file done")
    letters = read_all(connector_city.settings, dlq_topic(connector_city.topology.namespace, runner.name), 3)
    messages = {text_headers(m)["file_drop_line"]: text_headers(m)["__connect.errors.exception.message"]
                for m in letters}
    assert set(messages) == {"3", "5", "6"}
    assert "line 3 is not CSV (field larger than field limit" in messages["3"]
    assert "line 5 has 4 cells, the header has 13" in messages["5"]
    assert "count: 'many' is not a whole number" in messages["6"]
    assert sorted(g.value["alarm_id"] for g in alarms_on_topic(connector_city)) == sorted(r["alarm_id"] for r in good)


def test_files_still_being_written_are_not_taken(
    connector_city: City, drop: Path, file_runner: Callable[..., ConnectorRunner],
) -> None:
    runner = file_runner(settle_s=0.5).start()
    partial = drop / "export.jsonl.part"
    partial.write_text(jsonl([alarm(1)]))
    growing = drop / "growing.jsonl"
    growing.write_text(jsonl([alarm(2)]))
    # Appending keeps changing the size: the file never settles while it grows.
    for n in range(3, 8):
        wait_until(lambda: "growing.jsonl" in detail(runner)["waiting"], 5, "the growing file seen")
        with growing.open("a") as out:
            out.write(jsonl([alarm(n)]))
        assert detail(runner)["files_done"] == 0
    wait_until(lambda: detail(runner)["files_done"] == 1, 10, "the settled file done")
    assert partial.exists() and detail(runner)["waiting"] == []
    os.replace(partial, drop / "export.jsonl")  # the exporter renames the finished file
    wait_until(lambda: detail(runner)["files_done"] == 2, 10, "the renamed file done")
    assert sorted(g.value["alarm_id"] for g in alarms_on_topic(connector_city)) == sorted(
        alarm(n)["alarm_id"] for n in range(1, 8))


def test_a_file_stopped_half_way_resumes_at_the_next_line_and_done_files_are_never_read_again(
    connector_city: City, drop: Path, file_runner: Callable[..., ConnectorRunner],
) -> None:
    records = [alarm(1000 + n) for n in range(400)]
    (drop / "big.jsonl").write_text(jsonl(records))
    (drop / "small.jsonl").write_text(jsonl([alarm(1)]))
    os.utime(drop / "small.jsonl", ns=(1, 1))  # older: taken first
    config = {"done_dir": None, "batch_lines": 10}
    first = file_runner(**config).start()
    wait_until(lambda: detail(first)["current_file"] == "big.jsonl" and detail(first)["line"] >= 50, 30,
               "the big file half-way")
    first.stop()
    stopped_at = first.status().position["line"]
    assert first.status().position["file"]["name"] == "big.jsonl"
    assert 50 <= stopped_at < 400

    second = file_runner(**config).start()
    wait_until(lambda: detail(second)["files_done"] == 1, 30, "the big file finished")
    assert second.status().counts["published"] == 400 - stopped_at  # resumed at the next line
    (drop / "late.jsonl").write_text(jsonl([alarm(2)]))
    wait_until(lambda: detail(second)["files_done"] == 2, 30, "a file dropped later")
    second.stop()

    third = file_runner(**config).start()  # both files are still in the folder (done_dir: null)
    (drop / "last.jsonl").write_text(jsonl([alarm(3)]))
    wait_until(lambda: detail(third)["files_done"] == 1, 30, "the new file")
    assert third.status().counts["published"] == 1

    ids = [g.value["alarm_id"] for g in alarms_on_topic(connector_city)]
    expected = [r["alarm_id"] for r in records] + [alarm(n)["alarm_id"] for n in (1, 2, 3)]
    assert len(ids) == len(expected) and sorted(ids) == sorted(expected)  # each once


@pytest.mark.parametrize(
    ("avro_type", "cell", "expected"),
    [
        ("int", " 42 ", 42),
        ("long", "-7", -7),
        ("double", "0.25", 0.25),
        ("boolean", "yes", True),
        ("boolean", "0", False),
        ("string", " kept as is ", " kept as is "),
        (["null", "string"], "", None),
        (["null", "double"], "1.5", 1.5),
        ({"type": "int", "logicalType": "date"}, "2026-11-23", "2026-11-23"),
        ({"type": "long", "logicalType": "timestamp-millis"}, "1700000000000", 1700000000000),
        ({"type": "long", "logicalType": "timestamp-millis"}, "2026-11-23T08:30:00+08:00", "2026-11-23T08:30:00+08:00"),
        ({"type": "long", "logicalType": "timestamp-millis"}, "2026-11-23 08:30:00", "2026-11-23T08:30:00+08:00"),
        ({"type": "array", "items": "string"}, '["a", "b"]', ["a", "b"]),
    ],
)
def test_cells_are_converted_by_their_avro_type(
    connector_city: City, drop: Path, avro_type: Any, cell: str, expected: Any,
) -> None:
    assert converter(connector_city, drop).cell_value(avro_type, cell) == expected


@pytest.mark.parametrize(
    ("avro_type", "cell", "problem"),
    [
        ("int", "4.5", "'4.5' is not a whole number"),
        ("double", "many", "'many' is not a number"),
        ("boolean", "perhaps", "'perhaps' is not true or false"),
        ({"type": "long", "logicalType": "timestamp-millis"}, "yesterday", "'yesterday' is not a time"),
        ({"type": "array", "items": "string"}, "[a", "is not JSON"),
    ],
)
def test_bad_cells_say_what_is_wrong(connector_city: City, drop: Path, avro_type: Any, cell: str, problem: str) -> None:
    with pytest.raises(RowInvalid, match=problem):
        converter(connector_city, drop).cell_value(avro_type, cell)


def test_a_naive_time_without_a_configured_zone_is_a_bad_cell(connector_city: City, drop: Path) -> None:
    with pytest.raises(RowInvalid, match="no UTC offset"):
        converter(connector_city, drop, naive_timezone=None).cell_value(
            {"type": "long", "logicalType": "timestamp-millis"}, "2026-11-23 08:30:00")


def test_config_problems_are_explained(connector_city: City, drop: Path) -> None:
    with pytest.raises(ConnectorConfigInvalid) as caught:
        parse_config(FileDropConfig, "x", {"path": str(drop), "event_type": "camera_alarm", "encoding": "klingon",
                                           "naive_timezone": "Mars/Olympus", "patern": "*.csv"})
    text = str(caught.value)
    assert "unknown text encoding 'klingon'" in text
    assert "unknown time zone 'Mars/Olympus'" in text
    assert "unknown key 'patern' (did you mean 'pattern'?)" in text


def test_an_event_type_the_connector_does_not_publish_stops_it_at_start(
    connector_city: City, file_runner: Callable[..., ConnectorRunner],
) -> None:
    with pytest.raises(PublishRefused, match="may not publish population_change"):
        file_runner(event_type="population_change").start()


def test_a_csv_header_is_checked_before_any_row(connector_city: City, drop: Path) -> None:
    source = converter(connector_city, drop, columns={"CAM": "camera_id"}, ignore_columns=["batch"])
    (drop / "a.csv").write_text("alarm_id,CAM,alarm_type,severity,occurred_at,batch\n"
                                f"{alarm(1)['alarm_id']},CAM-CC-00001,INTRUSION,LOW,1700000000000,b7\n")
    rows = list(source.rows(drop / "a.csv"))
    assert [r.record for r in rows] == [{"alarm_id": alarm(1)["alarm_id"], "camera_id": "CAM-CC-00001",
                                         "alarm_type": "INTRUSION", "severity": "LOW", "occurred_at": 1700000000000}]
    (drop / "b.csv").write_text("alarm_id,camera_id,camera_id,alarm_type,severity,occurred_at\n")
    with pytest.raises(FileRejected, match="fills camera_id, which another column fills too"):
        list(source.rows(drop / "b.csv"))


def converter(city: City, drop: Path, **config: Any) -> FileDrop:
    """A file-drop source set up on ``drop`` but not run: for its reading and converting."""
    settings = {"path": str(drop), "event_type": "camera_alarm", "naive_timezone": "Asia/Shanghai", **config}
    connector = Connector.model_validate({"name": "conversions", "type": "file_drop", "department": "police",
                                          "publishes": ["camera_alarm"], "config": settings})
    parsed = parse_config(FileDropConfig, connector.name, settings)
    context = SourceContext(connector=connector, topology=city.topology, settings=city.settings,
                            monitor=ConnectorMonitor(connector.name, "police", "file_drop"),
                            errors=None, retry=RetryPolicy())  # type: ignore[arg-type]  (nothing fails here)
    source = FileDrop(parsed, context)
    source.setup()
    return source
