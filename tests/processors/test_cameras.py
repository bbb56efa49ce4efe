"""Camera registry rows, merging and alarm enrichment (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.processors.cameras import CameraInfo, camera_from_row, camera_from_status, enrich_alarm, load_camera_file
from bus.processors.exceptions import CameraImportError

LOC = {"latitude": 23.02, "longitude": 113.12, "district": "LIUNAN", "street": "Feie Rd", "grid_cell": "LN-0412"}
CAM = CameraInfo("CAM-CC-00012", location=LOC, owner_department="city_management", kind="SURVEILLANCE_POINT")


@pytest.mark.parametrize(
    "alarm,expected_location,expected_owner,changed",
    [
        ({"camera_id": "CAM-CC-00012"}, LOC, "city_management", True),
        ({"camera_id": "CAM-CC-00012", "location": None, "owner_department": None}, LOC, "city_management", True),
        ({"camera_id": "CAM-CC-00012", "owner_department": "police"}, LOC, "police", True),
        ({"camera_id": "CAM-CC-00012", "location": {"district": "CHENGZHONG"}, "owner_department": "housing"},
         {"district": "CHENGZHONG"}, "housing", False),
    ],
)
def test_enrich_fills_only_missing_fields(alarm: dict, expected_location: dict, expected_owner: str, changed: bool) -> None:
    out, was_changed = enrich_alarm(alarm, CAM)
    assert (out["location"], out["owner_department"], was_changed) == (expected_location, expected_owner, changed)


def test_enrich_unknown_camera_leaves_alarm() -> None:
    alarm = {"camera_id": "CAM-X"}
    assert enrich_alarm(alarm, None) == (alarm, False)


@pytest.mark.parametrize(
    "held,newer,expected",
    [
        (CAM, CameraInfo(CAM.camera_id, status="OFFLINE", status_since=10), (LOC, "city_management", "OFFLINE")),
        (CameraInfo(CAM.camera_id, status="OFFLINE", status_since=20),
         CameraInfo(CAM.camera_id, status="ONLINE", status_since=10), (None, None, "OFFLINE")),  # older status loses
        (CAM, CameraInfo(CAM.camera_id, owner_department="police"), (LOC, "police", None)),
    ],
)
def test_merge(held: CameraInfo, newer: CameraInfo, expected: tuple) -> None:
    merged = held.merged(newer)
    assert (merged.location, merged.owner_department, merged.status) == expected
    assert CameraInfo.from_json(merged.to_json()) == merged


def test_camera_from_status() -> None:
    info = camera_from_status({"camera_id": "CAM-1", "status": "DEGRADED", "location": LOC, "kind": "TEMPORARY"}, 5)
    assert (info.status, info.status_since, info.district, info.kind) == ("DEGRADED", 5, "LIUNAN", "TEMPORARY")


@pytest.mark.parametrize(
    "row,problem",
    [
        ({"camera_id": ""}, "camera_id"),
        ({"camera_id": "C", "latitude": "x", "longitude": "1", "district": "CHENGZHONG"}, "latitude"),
        ({"camera_id": "C", "latitude": "1", "district": "CHENGZHONG"}, "longitude"),
        ({"camera_id": "C", "latitude": "1", "longitude": "1", "district": "ATLANTIS"}, "district"),
        ({"camera_id": "C", "kind": "DRONE"}, "kind"),
        ({"camera_id": "C", "status": "BROKEN"}, "status"),
    ],
)
def test_bad_rows(row: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        camera_from_row(row)


def test_load_csv_and_jsonl(tmp_path: Path) -> None:
    csv_file = tmp_path / "cameras.csv"
    csv_file.write_text(
        "camera_id,latitude,longitude,district,street,grid_cell,owner_department,kind\n"
        "CAM-CC-00012,23.02,113.12,liunan,Feie Rd,LN-0412,city_management,SURVEILLANCE_POINT\n"
        "CAM-NH-00001,,,,,,police,\n",
        encoding="utf-8",
    )
    first, second = load_camera_file(csv_file)
    assert first == CAM
    assert second == CameraInfo("CAM-NH-00001", owner_department="police")
    jsonl = tmp_path / "cameras.jsonl"
    jsonl.write_text('{"camera_id": "CAM-CC-00012", "location": %s, "owner_department": "city_management", '
                     '"kind": "SURVEILLANCE_POINT"}\n\n' % __import__("json").dumps(LOC), encoding="utf-8")
    assert load_camera_file(jsonl) == [CAM]


def test_load_reports_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "cameras.jsonl"
    path.write_text('{"camera_id": "A"}\nnot json\n[1]\n{"camera_id": "B", "kind": "DRONE"}\n', encoding="utf-8")
    with pytest.raises(CameraImportError) as info:
        load_camera_file(path)
    assert [line for line, _ in info.value.problems] == [2, 3, 4]


def test_a_heartbeat_changes_nothing_and_a_new_status_starts_its_own_since() -> None:
    online = CAM.merged(CameraInfo(CAM.camera_id, status="ONLINE", status_since=1_000))
    assert (online.status, online.status_since) == ("ONLINE", 1_000)
    assert online.merged(CameraInfo(CAM.camera_id, status="ONLINE", status_since=2_000)) == online  # no table write
    offline = online.merged(CameraInfo(CAM.camera_id, status="OFFLINE", status_since=3_000))
    assert (offline.status, offline.status_since) == ("OFFLINE", 3_000)
    assert offline.merged(CameraInfo(CAM.camera_id, status="ONLINE", status_since=2_500)) == offline  # older: ignored
