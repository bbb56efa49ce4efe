"""Realistic sample records for each event type, as the departments' systems send them.

Deterministic for a given seed, so tests and demos can reproduce what they published.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable
from typing import Any

# The demo city is Liuzhou (Guangxi): its five urban districts (schemas/common/district.avsc).
# District -> (latitude, longitude) near its centre, and the two-letter code in camera ids.
DISTRICTS: dict[str, tuple[float, float, str]] = {
    "CHENGZHONG": (24.3125, 109.4110, "CZ"),
    "YUFENG": (24.3185, 109.4525, "YF"),
    "LIUNAN": (24.2870, 109.3855, "LN"),
    "LIUBEI": (24.3620, 109.4025, "LB"),
    "LIUJIANG": (24.2550, 109.3335, "LJ"),
}
CAMERA_OWNERS = ["police", "police", "police", "city_management", "traffic_police", "housing", "street_lighting"]
STREETS = ["Wuxing Street", "Feie Road", "Donghuan Avenue", "Beique Road", "Liushi Road", "Longcheng Road"]
SURNAMES = ["Chen", "Li", "Huang", "Liang", "He", "Lin", "Zhang", "Wu"]
GIVEN = ["Wei", "Fang", "Min", "Jing", "Hao", "Lei", "Xiu Ying", "Jun"]
# Six-digit administrative division codes that begin resident ID numbers, per district.
REGION_CODES = {"CHENGZHONG": "450202", "YUFENG": "450203", "LIUNAN": "450204", "LIUBEI": "450205",
                "LIUJIANG": "450206"}


def _time(rng: random.Random, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))
    return (now - dt.timedelta(seconds=rng.randint(0, 3600))).isoformat(timespec="milliseconds")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _location(rng: random.Random, district: str) -> dict[str, Any]:
    lat, lon, code = DISTRICTS[district]
    return {
        "latitude": round(lat + rng.uniform(-0.05, 0.05), 6),
        "longitude": round(lon + rng.uniform(-0.05, 0.05), 6),
        "district": district,
        "street": rng.choice(STREETS),
        "grid_cell": f"{code}-{rng.randint(1, 999):04d}",
    }


def camera_id(rng: random.Random, district: str | None = None) -> str:
    district = district or rng.choice(list(DISTRICTS))
    return f"CAM-{DISTRICTS[district][2]}-{rng.randint(1, 1300):05d}"


def camera_alarm(rng: random.Random) -> dict[str, Any]:
    district = rng.choice(list(DISTRICTS))
    alarm_type = rng.choices(
        ["INTRUSION", "CROWD_GATHERING", "FIRE_SMOKE", "WATCHLIST_VEHICLE", "TAMPERING", "CAMERA_OFFLINE"],
        weights=[30, 10, 5, 20, 5, 30],
    )[0]
    record: dict[str, Any] = {
        "alarm_id": _uuid(rng),
        "camera_id": camera_id(rng, district),
        "alarm_type": alarm_type,
        "severity": rng.choice(["LOW", "MEDIUM", "HIGH", "CRITICAL"]),
        "occurred_at": _time(rng),
        "location": _location(rng, district),
        "owner_department": rng.choice(CAMERA_OWNERS),
        "confidence": round(rng.uniform(0.5, 0.99), 2),
    }
    if alarm_type == "WATCHLIST_VEHICLE":
        record["plate_number"] = f"桂B{rng.randint(10000, 99999)}"  # Liuzhou's plates
        record["snapshot_url"] = f"https://skynet.city.local/snapshots/{record['alarm_id']}.jpg"
    return record


def camera_status(rng: random.Random) -> dict[str, Any]:
    district = rng.choice(list(DISTRICTS))
    status = rng.choices(["ONLINE", "OFFLINE", "DEGRADED"], weights=[70, 20, 10])[0]
    record: dict[str, Any] = {
        "camera_id": camera_id(rng, district),
        "status": status,
        "reported_at": _time(rng),
        "location": _location(rng, district),
        "owner_department": rng.choice(CAMERA_OWNERS),
        "kind": rng.choices(["SURVEILLANCE_POINT", "VEHICLE_CHECKPOINT", "TEMPORARY"], weights=[90, 8, 2])[0],
    }
    if status != "ONLINE":
        record["reason"] = rng.choice(["power loss", "link down", "lens obstructed", "firmware fault"])
    return record


def city_case(rng: random.Random) -> dict[str, Any]:
    district = rng.choice(list(DISTRICTS))
    category = rng.choice(["MANHOLE_COVER", "STREET_LIGHT", "ROAD_SIGN", "GREEN_SPACE", "GARBAGE", "STREET_VENDOR"])
    status = rng.choice(["REPORTED", "DISPATCHED", "HANDLING", "RESOLVED", "CLOSED"])
    reported = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))) - dt.timedelta(hours=rng.randint(1, 48))
    record: dict[str, Any] = {
        "case_id": _uuid(rng),
        "status": status,
        "category": category,
        "title": f"{category.replace('_', ' ').lower()} problem on {rng.choice(STREETS)}",
        "source": rng.choice(["INSPECTOR", "CITIZEN", "HOTLINE"]),
        "level": "DISTRICT",
        "district": district,
        "location": _location(rng, district),
        "reported_at": reported.isoformat(timespec="milliseconds"),
        "updated_at": (reported + dt.timedelta(minutes=rng.randint(5, 600))).isoformat(timespec="milliseconds"),
        "respond_by": (reported + dt.timedelta(hours=2)).isoformat(timespec="milliseconds"),
        "resolve_by": (reported + dt.timedelta(hours=72)).isoformat(timespec="milliseconds"),
    }
    if status != "REPORTED":
        record["responsible_unit"] = f"{district.lower()}-{category.lower().replace('_', '-')}-unit"
    if record["source"] in ("CITIZEN", "HOTLINE"):
        record["reporter_name"] = f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}"
        record["reporter_phone"] = f"13{rng.randint(100000000, 999999999)}"
    return record


def national_id(rng: random.Random, district: str, birth: dt.date) -> str:
    """An 18-character resident ID number with a valid ISO 7064 MOD 11-2 check character."""
    body = f"{REGION_CODES[district]}{birth:%Y%m%d}{rng.randint(0, 999):03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]
    return body + check


def population_change(rng: random.Random) -> dict[str, Any]:
    district = rng.choice(list(DISTRICTS))
    change = rng.choices(
        ["BIRTH", "DEATH", "MOVE_IN", "MOVE_OUT", "ADDRESS_CHANGE", "HOUSEHOLD_CHANGE", "ID_DOCUMENT_CHANGE"],
        weights=[10, 6, 15, 12, 30, 12, 15],
    )[0]
    today = dt.date.today()
    birth = today if change == "BIRTH" else today - dt.timedelta(days=rng.randint(18 * 365, 90 * 365))
    record: dict[str, Any] = {
        "change_id": _uuid(rng),
        "person_id": f"P{rng.randint(10**9, 10**10 - 1)}",
        "change_type": change,
        "effective_date": (today - dt.timedelta(days=rng.randint(0, 10))).isoformat(),
        "recorded_at": _time(rng),
        "name": f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}",
        "national_id": national_id(rng, district, birth),
        "gender": rng.choice(["FEMALE", "MALE"]),
        "birth_date": birth.isoformat(),
        "phone": f"13{rng.randint(100000000, 999999999)}",
        "address": f"{rng.randint(1, 300)} {rng.choice(STREETS)}, {district.title()} District",
        "district": district,
        "household_id": f"H{rng.randint(10**8, 10**9 - 1)}",
    }
    if change in ("MOVE_IN", "MOVE_OUT", "ADDRESS_CHANGE"):
        record["previous_district"] = rng.choice(list(DISTRICTS))
    if change == "ID_DOCUMENT_CHANGE":
        record["id_document_type"] = "RESIDENT_ID_CARD"
        record["id_document_expires_on"] = (today + dt.timedelta(days=20 * 365)).isoformat()
    if change == "DEATH":
        record["cause_of_death_category"] = rng.choice(["I00-I99", "C00-D48", "J00-J99"])
    return record


GENERATORS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "camera_alarm": camera_alarm,
    "camera_status": camera_status,
    "city_case": city_case,
    "population_change": population_change,
}


def sample(event_type: str, rng: random.Random | None = None) -> dict[str, Any]:
    return GENERATORS[event_type](rng or random.Random())
