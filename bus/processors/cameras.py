"""The camera registry: what the bus knows of each camera, and alarm enrichment.

A camera's entry comes from two places: ``camera_status`` events (the platform reports a
camera's state, often with its location and owner) and a registry import (a CSV or
JSON-lines export of the camera inventory). A later source only fills or replaces the
fields it carries: a status event without a location keeps the imported location.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from bus.processors.exceptions import CameraImportError

DISTRICTS = ("CHENGZHONG", "YUFENG", "LIUNAN", "LIUBEI", "LIUJIANG")  # schemas/common/district.avsc
KINDS = ("SURVEILLANCE_POINT", "VEHICLE_CHECKPOINT", "TEMPORARY")
STATUSES = ("ONLINE", "OFFLINE", "DEGRADED")


@dataclass(frozen=True)
class CameraInfo:
    """One camera of the registry table (camera_id is the table key)."""

    camera_id: str
    location: dict[str, Any] | None = None  # city.common.Location as JSON
    owner_department: str | None = None
    kind: Literal["SURVEILLANCE_POINT", "VEHICLE_CHECKPOINT", "TEMPORARY"] | None = None
    status: Literal["ONLINE", "OFFLINE", "DEGRADED"] | None = None
    status_since: int | None = None  # event time (ms since 1970) of the report that set the current status

    @property
    def district(self) -> str | None:
        return (self.location or {}).get("district")

    def to_json(self) -> dict[str, Any]:
        # Shallow (dataclasses.asdict deep-copies the location: 6% of the processors' time
        # under the soak's load); the location dict is never changed in place.
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "CameraInfo":
        return cls(**{k: value.get(k) for k in cls.__dataclass_fields__})

    def merged(self, newer: "CameraInfo") -> "CameraInfo":
        """This entry updated by ``newer``: only the fields ``newer`` carries replace ours.
        A status older than the one held (event time) does not replace it; the same status
        again (a heartbeat) keeps its ``status_since``, so that a heartbeat changes nothing
        and the table is not written for it."""
        updates = {k: v for k in _FIELDS if (v := getattr(newer, k)) is not None and k not in ("status", "status_since")}
        if newer.status is not None and (newer.status != self.status or self.status_since is None) and (
            self.status_since is None or newer.status_since is None or newer.status_since >= self.status_since
        ):
            updates["status"] = newer.status
            updates["status_since"] = newer.status_since
        return replace(self, **updates)


_FIELDS = tuple(f.name for f in fields(CameraInfo))


def camera_from_status(record: dict[str, Any], reported_at_ms: int | None) -> CameraInfo:
    """The registry's view of one camera_status record (JSON form)."""
    return CameraInfo(
        camera_id=record["camera_id"],
        location=record.get("location"),
        owner_department=record.get("owner_department"),
        kind=record.get("kind"),
        status=record.get("status"),
        status_since=reported_at_ms,
    )


def enrich_alarm(alarm: dict[str, Any], camera: CameraInfo | None) -> tuple[dict[str, Any], bool]:
    """``alarm`` (JSON form) with a missing location / owner_department filled from the
    registry. Returns (alarm, changed); fields the alarm carries are never overwritten."""
    if camera is None:
        return alarm, False
    out = dict(alarm)
    if out.get("location") is None and camera.location is not None:
        out["location"] = camera.location
    if out.get("owner_department") is None and camera.owner_department is not None:
        out["owner_department"] = camera.owner_department
    return out, out != alarm


def _location_of(row: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(row.get("location"), dict):
        return row["location"]
    if not any(row.get(k) not in (None, "") for k in ("latitude", "longitude", "district")):
        return None
    location: dict[str, Any] = {
        "latitude": float(row["latitude"]),
        "longitude": float(row["longitude"]),
        "district": str(row["district"]).upper(),
    }
    for extra in ("street", "grid_cell"):
        if row.get(extra) not in (None, ""):
            location[extra] = row[extra]
    return location


def camera_from_row(row: dict[str, Any]) -> CameraInfo:
    """One registry import row: either a nested ``location`` object or flat
    ``latitude, longitude, district[, street, grid_cell]`` columns. ValueError if bad."""
    camera_id = str(row.get("camera_id") or "").strip()
    if not camera_id:
        raise ValueError("camera_id: required field is missing")
    try:
        location = _location_of(row)
    except KeyError as exc:
        raise ValueError(f"{exc.args[0]}: required with the other location columns") from None
    except (TypeError, ValueError):
        raise ValueError("latitude/longitude: expected numbers") from None
    if location is not None and location.get("district") not in DISTRICTS:
        raise ValueError(f"district: {location.get('district')!r} is not one of {', '.join(DISTRICTS)}")
    kind = row.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    status = row.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    return CameraInfo(
        camera_id=camera_id,
        location=location,
        owner_department=row.get("owner_department") or None,
        kind=kind,
        status=status,
    )


def load_camera_file(path: str | Path) -> list[CameraInfo]:
    """Read a camera registry export: ``.csv`` (header row) or JSON lines (anything else).
    Raises CameraImportError listing every bad line; nothing is returned then."""
    path = Path(path)
    cameras: list[CameraInfo] = []
    problems: list[tuple[int, str]] = []
    with path.open(encoding="utf-8", newline="") as stream:
        if path.suffix.lower() == ".csv":
            rows: Any = ((n + 2, row) for n, row in enumerate(csv.DictReader(stream)))
        else:
            rows = ((n + 1, line) for n, line in enumerate(stream) if line.strip())
        for line, row in rows:
            try:
                if isinstance(row, str):
                    row = json.loads(row)
                    if not isinstance(row, dict):
                        raise ValueError("expected a JSON object")
                cameras.append(camera_from_row(row))
            except json.JSONDecodeError as exc:
                problems.append((line, f"not JSON: {exc.msg}"))
            except ValueError as exc:
                problems.append((line, str(exc)))
    if problems:
        raise CameraImportError(str(path), problems)
    return cameras
