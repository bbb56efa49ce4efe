"""Storm and flap rules, driven by recorded event sequences (time comes from the records)."""

from __future__ import annotations

import uuid

import pytest

from bus.processors.storms import FLAP_CAMERA_ID, StormConfig, StormMerger, event_time_ms, iso_ms

T0 = event_time_ms("2026-11-23T08:30:00+08:00")


def alarm(camera: str, kind: str, at_s: float, severity: str = "MEDIUM", **extra: object) -> dict:
    record = {
        "alarm_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{camera}/{kind}/{at_s}")),
        "camera_id": camera,
        "alarm_type": kind,
        "severity": severity,
        "occurred_at": iso_ms(T0 + int(at_s * 1000)),
        "count": 1,
    }
    record.update(extra)
    return record


def run(records: list[dict], config: StormConfig | None = None) -> tuple[list[dict], list[dict]]:
    """(emitted while feeding, emitted by the final flush)."""
    merger = StormMerger(config)
    live = [out for r in records for out in merger.add(r)]
    return live, merger.flush()


def summary(alarms: list[dict]) -> list[tuple[str, str, int]]:
    return [(a["camera_id"], a["alarm_type"], a["count"]) for a in alarms]


A, B = "CAM-CC-00001", "CAM-NH-00002"

CASES = [
    # name, records, emitted live, emitted at flush
    ("single alarm waits for its window", [alarm(A, "INTRUSION", 0)], [], [(A, "INTRUSION", 1)]),
    (
        "same camera and type within 60 s merge",
        [alarm(A, "INTRUSION", s) for s in (0, 10, 30, 59.9)],
        [],
        [(A, "INTRUSION", 4)],
    ),
    (
        "an alarm at the window end opens a new window and closes the old one",
        [alarm(A, "INTRUSION", 0), alarm(A, "INTRUSION", 20), alarm(A, "INTRUSION", 60)],
        [(A, "INTRUSION", 2)],
        [(A, "INTRUSION", 1)],
    ),
    (
        "other type or other camera: separate windows",
        [alarm(A, "INTRUSION", 0), alarm(A, "FIRE_SMOKE", 1), alarm(B, "INTRUSION", 2)],
        [],
        [(A, "INTRUSION", 1), (A, "FIRE_SMOKE", 1), (B, "INTRUSION", 1)],
    ),
    (
        "another key's event time closes due windows (watermark), never the wall clock",
        [alarm(A, "INTRUSION", 0), alarm(A, "INTRUSION", 5), alarm(B, "TAMPERING", 61)],
        [(A, "INTRUSION", 2)],
        [(B, "TAMPERING", 1)],
    ),
    (
        "counts of already merged alarms add up",
        [alarm(A, "INTRUSION", 0, count=5), alarm(A, "INTRUSION", 1, count=3)],
        [],
        [(A, "INTRUSION", 8)],
    ),
    (
        "an alarm later than the window of its key is emitted alone at once",
        [alarm(A, "INTRUSION", 200), alarm(A, "INTRUSION", 100)],
        [(A, "INTRUSION", 1)],
        [(A, "INTRUSION", 1)],
    ),
    (
        "a few offline cameras are ordinary storms, not a flap",
        [alarm(A, "CAMERA_OFFLINE", 0), alarm(A, "CAMERA_OFFLINE", 3), alarm(B, "CAMERA_OFFLINE", 4)],
        [],
        [(A, "CAMERA_OFFLINE", 2), (B, "CAMERA_OFFLINE", 1)],
    ),
    (
        "offline storm continues past the flap window and merges within 60 s",
        [alarm(A, "CAMERA_OFFLINE", s) for s in (0, 5, 15, 40)] + [alarm(B, "INTRUSION", 70)],
        [(A, "CAMERA_OFFLINE", 4)],
        [(B, "INTRUSION", 1)],
    ),
]


@pytest.mark.parametrize("name,records,live,flushed", CASES, ids=[c[0] for c in CASES])
def test_storm_rules(name: str, records: list[dict], live: list, flushed: list) -> None:
    got_live, got_flushed = run(records)
    assert summary(got_live) == live
    assert sorted(summary(got_flushed)) == sorted(flushed)


def test_merged_alarm_keeps_first_id_and_takes_highest_severity() -> None:
    first = alarm(A, "INTRUSION", 0, severity="LOW", description="fence")
    _, out = run([first, alarm(A, "INTRUSION", 30, severity="CRITICAL"), alarm(A, "INTRUSION", 10, severity="HIGH")])
    (merged,) = out
    assert merged["alarm_id"] == first["alarm_id"]
    assert merged["severity"] == "CRITICAL"
    assert merged["count"] == 3
    assert merged["occurred_at"] == first["occurred_at"]
    assert merged["description"].startswith("alarm storm: 3 INTRUSION alarms within 30 s; first: fence")


def test_single_alarm_passes_unchanged() -> None:
    only = alarm(A, "FIRE_SMOKE", 0, description="smoke")
    assert run([only])[1] == [only]


def flap(cameras: int, within_s: float, start_s: float = 0) -> list[dict]:
    return [
        alarm(f"CAM-SD-{i:05d}", "CAMERA_OFFLINE", start_s + within_s * i / cameras, location={"district": "SHUNDE"})
        for i in range(cameras)
    ]


def test_network_flap_becomes_one_incident() -> None:
    records = flap(300, 4) + flap(300, 4)[:50]  # 300 cameras, some report twice
    live, flushed = run(records + [alarm(A, "INTRUSION", 30)])
    incidents = [a for a in live + flushed if a["camera_id"] == FLAP_CAMERA_ID]
    assert len(incidents) == 1
    assert [a for a in live + flushed if a["alarm_type"] == "CAMERA_OFFLINE"] == incidents
    (incident,) = incidents
    assert incident["count"] == 350
    assert "300 cameras offline" in incident["description"] and "SHUNDE 300" in incident["description"]
    assert incident["occurred_at"] == iso_ms(T0)
    # replaying the same records gives the same incident id
    again = [a for a in sum(run(records + [alarm(A, "INTRUSION", 30)]), []) if a["camera_id"] == FLAP_CAMERA_ID]
    assert again[0]["alarm_id"] == incident["alarm_id"]


@pytest.mark.parametrize(
    "cameras,within_s,threshold,incidents",
    [(99, 5, 100, 0), (100, 5, 100, 1), (100, 9.9, 100, 1), (150, 20, 100, 0), (5, 1, 5, 1), (500, 8, 0, 0)],
)
def test_flap_threshold_and_window(cameras: int, within_s: float, threshold: int, incidents: int) -> None:
    config = StormConfig(flap_threshold=threshold, flap_window_ms=10_000)
    out = sum(run(flap(cameras, within_s), config), [])
    assert len([a for a in out if a["camera_id"] == FLAP_CAMERA_ID]) == incidents
    if incidents == 0:
        assert sum(a["count"] for a in out) == cameras  # every raw alarm accounted for


def test_burst_of_storms_keeps_every_raw_alarm_counted() -> None:
    records = [alarm(f"CAM-CC-{i % 40:05d}", "INTRUSION", i * 0.25) for i in range(2000)]
    out = sum(run(records), [])
    assert sum(a["count"] for a in out) == 2000
    assert len(out) == 40 * 9  # 500 s of alarms = 9 windows of 60 s per camera


@pytest.mark.parametrize(
    "value,expected",
    [("2026-11-23T00:30:00Z", T0), ("2026-11-23T08:30:00+08:00", T0), (T0, T0)],
)
def test_event_time(value: object, expected: int) -> None:
    assert event_time_ms(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-11-23T08:30:00", True, None])
def test_event_time_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        event_time_ms(value)


def test_watermark_is_the_least_over_partitions() -> None:
    merger = StormMerger()
    assert merger.add(alarm(A, "INTRUSION", 0), partition=0) == []
    assert merger.add(alarm(B, "INTRUSION", 500), partition=1) == []  # partition 1 read ahead
    assert merger.add(alarm(A, "INTRUSION", 30), partition=0) == []  # not late: joins its window
    assert summary(merger.add(alarm(A, "TAMPERING", 100), partition=0)) == [(A, "INTRUSION", 2)]
