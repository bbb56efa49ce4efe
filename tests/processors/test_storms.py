"""Storm and flap rules, driven by recorded event sequences (time comes from the records):
what is emitted at once (while feeding) and what only when windows close (the final flush)."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.processors.encoding import derived_ce_id
from bus.processors.storms import (
    FLAP_CAMERA_ID,
    Emission,
    StormConfig,
    StormMerger,
    entry_name,
    event_time_ms,
    iso_ms,
)

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


def run(records: list[dict], config: StormConfig | None = None) -> tuple[list[Emission], list[Emission]]:
    """(emitted while feeding, emitted by the final flush)."""
    merger = StormMerger(config)
    live = [out for r in records for out in merger.add(r)]
    return live, merger.flush()


def run_all(records: list[dict], config: StormConfig | None = None) -> list[Emission]:
    live, flushed = run(records, config)
    return live + flushed


def summary(emissions: list[Emission]) -> list[tuple[str, str, int, str]]:
    return [(e.alarm["camera_id"], e.alarm["alarm_type"], e.alarm["count"], "update" if e.is_update else "new")
            for e in emissions]


def last_versions(emissions: list[Emission]) -> dict[str, dict]:
    """alarm_id -> the last version emitted (what a consumer upserting by id holds)."""
    return {e.alarm["alarm_id"]: e.alarm for e in emissions}


A, B = "CAM-CC-00001", "CAM-NH-00002"
INT, OFF = "INTRUSION", "CAMERA_OFFLINE"

CASES = [
    # name, records, emitted live, emitted at flush
    ("a single alarm is emitted at once, and nothing more", [alarm(A, INT, 0)], [(A, INT, 1, "new")], []),
    (
        "same camera and type within 60 s: the first at once, one update when the window closes",
        [alarm(A, INT, s) for s in (0, 10, 30, 59.9)],
        [(A, INT, 1, "new")],
        [(A, INT, 4, "update")],
    ),
    (
        "an alarm at the window end closes the old window (its update) and opens a new one (at once)",
        [alarm(A, INT, 0), alarm(A, INT, 20), alarm(A, INT, 60)],
        [(A, INT, 1, "new"), (A, INT, 2, "update"), (A, INT, 1, "new")],
        [],
    ),
    (
        "other type or other camera: separate windows, each first at once",
        [alarm(A, INT, 0), alarm(A, "FIRE_SMOKE", 1), alarm(B, INT, 2)],
        [(A, INT, 1, "new"), (A, "FIRE_SMOKE", 1, "new"), (B, INT, 1, "new")],
        [],
    ),
    (
        "another key's event time closes due windows (watermark), never the wall clock",
        [alarm(A, INT, 0), alarm(A, INT, 5), alarm(B, "TAMPERING", 61)],
        [(A, INT, 1, "new"), (B, "TAMPERING", 1, "new"), (A, INT, 2, "update")],
        [],
    ),
    (
        "counts of already merged alarms add up; the first keeps the count it came with",
        [alarm(A, INT, 0, count=5), alarm(A, INT, 1, count=3)],
        [(A, INT, 5, "new")],
        [(A, INT, 8, "update")],
    ),
    (
        "a count below 1 counts as one raw alarm, so the update always counts more",
        [alarm(A, INT, 0, count=0), alarm(A, INT, 1, count=-3)],
        [(A, INT, 0, "new")],
        [(A, INT, 2, "update")],
    ),
    (
        "an alarm older than the window of its key is emitted alone at once",
        [alarm(A, INT, 200), alarm(A, INT, 100)],
        [(A, INT, 1, "new"), (A, INT, 1, "new")],
        [],
    ),
    (
        "offline alarms are held for the flap window only; a few cameras are ordinary storms",
        [alarm(A, OFF, 0), alarm(A, OFF, 3), alarm(B, OFF, 4)],
        [],
        [(A, OFF, 1, "new"), (B, OFF, 1, "new"), (A, OFF, 2, "update")],
    ),
    (
        "the flap window's end (event time) releases the offline alarm; other types pass at once",
        [alarm(A, OFF, 0), alarm(A, OFF, 3), alarm(B, INT, 10)],
        [(B, INT, 1, "new"), (A, OFF, 1, "new")],
        [(A, OFF, 2, "update")],
    ),
    (
        "an offline storm continues past the flap window and merges within 60 s",
        [alarm(A, OFF, s) for s in (0, 5, 15, 40)] + [alarm(B, INT, 70)],
        [(A, OFF, 1, "new"), (B, INT, 1, "new"), (A, OFF, 4, "update")],
        [],
    ),
    (
        "flap detection off: offline alarms are not held",
        [alarm(A, OFF, 0), alarm(A, OFF, 3)],
        [(A, OFF, 1, "new")],
        [(A, OFF, 2, "update")],
    ),
]


@pytest.mark.parametrize("name,records,live,flushed", CASES, ids=[c[0] for c in CASES])
def test_storm_rules(name: str, records: list[dict], live: list, flushed: list) -> None:
    config = StormConfig(flap_threshold=0) if name.startswith("flap detection off") else None
    got_live, got_flushed = run(records, config)
    assert summary(got_live) == live
    assert summary(got_flushed) == flushed
    # every raw alarm accounted for: the last version of each alarm sums to the raw count
    raw = sum(max(1, r["count"]) for r in records)
    assert sum(a["count"] for a in last_versions(got_live + got_flushed).values()) == raw


def test_fire_alarm_is_emitted_by_the_record_itself() -> None:
    """No later record (no watermark move) and no flush: the fire brigade hears of it now, also
    while other storms and a possible flap are open."""
    merger = StormMerger()
    merger.add(alarm(B, INT, 0))
    merger.add(alarm(B, INT, 1))
    merger.add(alarm(A, OFF, 2))  # held for the flap decision
    fire = alarm(A, "FIRE_SMOKE", 3, severity="HIGH", description="smoke on the roof")
    assert merger.add(fire) == [Emission(fire)]  # unchanged, and nothing else with it
    assert merger.open_windows == 3  # the storms stay open for their updates


def test_update_keeps_first_id_and_takes_highest_severity() -> None:
    first = alarm(A, INT, 0, severity="LOW", description="fence")
    live, flushed = run([first, alarm(A, INT, 30, severity="CRITICAL"), alarm(A, INT, 10, severity="HIGH")])
    assert live == [Emission(first)]
    (update,) = flushed
    assert update.first == first
    merged = update.alarm
    assert merged["alarm_id"] == first["alarm_id"]
    assert merged["severity"] == "CRITICAL"
    assert merged["count"] == 3
    assert merged["occurred_at"] == first["occurred_at"]
    assert merged["description"].startswith("alarm storm: 3 INTRUSION alarms within 30 s; first: fence")
    assert {k: v for k, v in merged.items() if k not in ("count", "severity", "description")} == {
        k: v for k, v in first.items() if k not in ("count", "severity", "description")
    }


def test_update_gets_a_cloudevents_id_of_its_own_and_replays_give_the_same_ids() -> None:
    records = [alarm(A, INT, s) for s in (0, 10, 30)] + [alarm(B, INT, 1)]
    out = run_all(records)
    (update,) = [e for e in out if e.is_update]
    assert update.first is not None
    alarm_id = update.alarm["alarm_id"]
    # the ids of today's records: uuid5 of the alarm id and count (an idempotent sink keeps both)
    assert derived_ce_id(update.first) == str(uuid.uuid5(uuid.NAMESPACE_URL, f"bus-processors/{alarm_id}/1"))
    assert derived_ce_id(update.alarm) == str(uuid.uuid5(uuid.NAMESPACE_URL, f"bus-processors/{alarm_id}/3"))
    ce_ids = [derived_ce_id(e.alarm) for e in out]
    assert len(set(ce_ids)) == len(ce_ids) == 3
    assert [derived_ce_id(e.alarm) for e in run_all(records)] == ce_ids


def test_single_alarm_passes_unchanged() -> None:
    only = alarm(A, "FIRE_SMOKE", 0, description="smoke")
    assert run([only]) == ([Emission(only)], [])


def flap(cameras: int, within_s: float, start_s: float = 0) -> list[dict]:
    return [
        alarm(f"CAM-SD-{i:05d}", OFF, start_s + within_s * i / cameras, location={"district": "YUFENG"})
        for i in range(cameras)
    ]


def test_network_flap_becomes_one_incident() -> None:
    records = flap(300, 4) + flap(300, 4)[:50]  # 300 cameras, some report twice
    live, flushed = run(records + [alarm(A, INT, 30)])
    assert flushed == []
    assert summary(live) == [(A, INT, 1, "new"), (FLAP_CAMERA_ID, OFF, 350, "new")]  # no single offline alarm
    incident = live[1].alarm
    assert "300 cameras offline" in incident["description"] and "YUFENG 300" in incident["description"]
    assert incident["occurred_at"] == iso_ms(T0)
    # replaying the same records gives the same incident id
    again = [e.alarm for e in run_all([*records, alarm(A, INT, 30)]) if e.alarm["camera_id"] == FLAP_CAMERA_ID]
    assert again[0]["alarm_id"] == incident["alarm_id"]


@pytest.mark.parametrize(
    "cameras,within_s,threshold,incidents",
    [(99, 5, 100, 0), (100, 5, 100, 1), (100, 9.9, 100, 1), (150, 20, 100, 0), (5, 1, 5, 1), (500, 8, 0, 0)],
)
def test_flap_threshold_and_window(cameras: int, within_s: float, threshold: int, incidents: int) -> None:
    config = StormConfig(flap_threshold=threshold, flap_window_ms=10_000)
    live, flushed = run(flap(cameras, within_s), config)
    out = live + flushed
    assert len([e for e in out if e.alarm["camera_id"] == FLAP_CAMERA_ID]) == incidents
    if incidents == 0:
        assert sum(a["count"] for a in last_versions(out).values()) == cameras  # every raw alarm accounted for
        assert not any(e.is_update for e in out)  # one alarm per camera: nothing to update
    if threshold == 0:
        assert len(live) == cameras  # no flap detection: nothing held


def test_burst_of_storms_keeps_every_raw_alarm_counted() -> None:
    records = [alarm(f"CAM-CC-{i % 40:05d}", INT, i * 0.25) for i in range(2000)]
    out = run_all(records)
    assert sum(a["count"] for a in last_versions(out).values()) == 2000
    # 500 s of alarms = 9 windows of 60 s per camera, each a first and an update
    assert len(last_versions(out)) == 40 * 9
    assert len(out) == 2 * 40 * 9
    assert sum(e.alarm["count"] for e in out if not e.is_update) == 40 * 9


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
    assert summary(merger.add(alarm(A, INT, 0), partition=0)) == [(A, INT, 1, "new")]
    assert summary(merger.add(alarm(B, INT, 500), partition=1)) == [(B, INT, 1, "new")]  # partition 1 read ahead
    assert merger.add(alarm(A, INT, 30), partition=0) == []  # not late: joins its window
    assert summary(merger.add(alarm(A, "TAMPERING", 100), partition=0)) == [
        (A, "TAMPERING", 1, "new"), (A, INT, 2, "update"),
    ]


# -- the store: what open windows hold survives a crash -----------------------------------------

CAMERAS = [f"CAM-CC-{n:05d}" for n in range(4)]


@st.composite
def alarm_runs(draw: st.DrawFn) -> list[dict]:
    """Alarms of a few cameras and types, mostly in event-time order, now and then late."""
    records, at = [], 0.0
    for n in range(draw(st.integers(1, 40))):
        at += draw(st.sampled_from([0.0, 0.5, 3.0, 11.0, 61.0]))
        late = draw(st.sampled_from([0.0, 0.0, 0.0, 30.0, 200.0]))
        records.append(alarm(draw(st.sampled_from(CAMERAS)), draw(st.sampled_from([INT, OFF, OFF])), max(0.0, at - late),
                             count=draw(st.sampled_from([1, 1, 3])), alarm_id=f"A{n}"))
    return records


def raw_alarms(records: list[dict]) -> int:
    return sum(max(1, r["count"]) for r in records)


@settings(max_examples=200, deadline=None)
@given(records=alarm_runs(), crash=st.floats(0, 1), acknowledged=st.booleans(), flap=st.sampled_from([0, 2, 3]))
def test_a_crash_loses_no_raw_alarm_that_a_window_held(records: list[dict], crash: float, acknowledged: bool,
                                                        flap: int) -> None:
    """The worker dies after ``crash`` of the records (their offsets committed) and a new one
    restores the windows from the store. Every raw alarm is still counted in the last version
    a consumer holds of some alarm; a storm's membership may split in two (a window of one
    alarm already published is not stored), never lose a count. ``acknowledged``: whether the
    first worker's emissions were acknowledged (and forgotten) before it died; if not, the
    second publishes them again with the same versions."""
    config = StormConfig(flap_threshold=flap, flap_window_ms=10_000)
    store: dict[str, str] = {}
    first = StormMerger(config, store=store)
    cut = int(len(records) * crash)
    before = [e for r in records[:cut] for e in first.add(r)]
    if acknowledged:
        for emission in before:
            first.forget(emission.discharges)
    first.write_pending()  # the commit of the first ``cut`` records' offsets
    second = StormMerger(config, store=dict(store))
    after = second.restore() + [e for r in records[cut:] for e in second.add(r)] + second.flush()
    for emission in after:
        second.forget(emission.discharges)
    second.write_pending()
    assert sum(a["count"] for a in last_versions(before + after).values()) == raw_alarms(records)
    assert second.store == {}, "every window closed and published: nothing is left in the store"


def test_without_a_store_a_crash_loses_the_held_alarms() -> None:
    """What the store is for: offline alarms held for the flap decision, and a storm's count."""
    records = [alarm(A, INT, 0), alarm(A, INT, 5), alarm(B, OFF, 6)]
    lost = StormMerger()
    before = [e for r in records for e in lost.add(r)]
    assert summary(before) == [(A, INT, 1, "new")]
    store: dict[str, str] = {}
    kept = StormMerger(store=store)
    assert summary([e for r in records for e in kept.add(r)]) == [(A, INT, 1, "new")]
    assert store == {} and kept.write_pending() == 2
    assert sorted(store) == sorted([entry_name("flap", B, T0 + 6000, records[2]["alarm_id"]),
                                    entry_name("storm", A, INT, records[0]["alarm_id"])])
    restored = StormMerger(store=dict(store))
    assert (restored.restore(), restored.open_windows) == ([], 2)
    assert summary(restored.flush()) == [(B, OFF, 1, "new"), (A, INT, 2, "update")]


def test_a_window_of_one_published_alarm_is_not_stored_and_a_closed_one_stays_until_acknowledged() -> None:
    store: dict[str, str] = {}
    merger = StormMerger(store=store)
    records = [alarm(A, INT, 0), alarm(A, INT, 1), alarm(A, INT, 61), alarm(A, INT, 62)]
    merger.add(records[0])
    assert merger.write_pending() == 0  # nothing unpublished: no changelog record per alarm
    merger.add(records[1])
    merger.write_pending()
    old = entry_name("storm", A, INT, records[0]["alarm_id"])
    assert json.loads(store[old])["count"] == 2
    update, first = merger.add(records[2])  # closes the window (its update), opens the next
    assert update.is_update and [name for name, _ in update.discharges] == [old]
    merger.add(records[3])  # the next window holds something too
    merger.write_pending()
    new = entry_name("storm", A, INT, records[2]["alarm_id"])
    assert sorted(store) == sorted([old, new]), "the old window's entry stays until its update is acknowledged"
    merger.forget(update.discharges)
    merger.write_pending()
    assert list(store) == [new] and json.loads(store[new])["count"] == 2


def test_a_window_writes_its_entry_once_per_commit_however_many_alarms_it_absorbs() -> None:
    store: dict[str, str] = {}
    merger = StormMerger(store=store)
    records = [alarm(A, INT, n * 0.1) for n in range(50)]
    for record in records:
        merger.add(record)
    assert merger.write_pending() == 1
    assert json.loads(store[entry_name("storm", A, INT, records[0]["alarm_id"])])["count"] == 50
    assert merger.write_pending() == 0
