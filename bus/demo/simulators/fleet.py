"""The Skynet camera fleet of the demo city, Liuzhou's after the fifth phase of its
programme (1,440 standard-definition points upgraded to HD, 1,000 new HD points): 6,381
surveillance points and 153 vehicle checkpoints over the five districts, of which more
than 5,000 are usable at any time; the maintenance promise is 95% in working order.

Ids follow the samples (``CAM-<district code>-<number>``, e.g. ``CAM-CZ-00412``). Each
camera has a fixed place, owner and kind, drawn from the seed: 153 vehicle checkpoints
(traffic police), 44 construction-site cameras (housing, grouped by site), the cameras
other departments attached instead of building their own (city management, street
lighting, the traffic police's electronic police, emergency command, the fire brigade,
environmental protection, internet-cafe supervision), the rest police surveillance
points. The fleet also holds each camera's current state, shared by the platform
simulator (which reports changes over HTTP) and the devices simulator (whose heartbeats,
over MQTT, report the state the camera is in).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, Literal

from bus.demo.samples import DISTRICTS, STREETS

State = Literal["ONLINE", "OFFLINE", "DEGRADED"]
#: Liuzhou's network after the fifth phase: surveillance points and vehicle checkpoints.
SURVEILLANCE_POINTS = 6381
CHECKPOINTS = 153
FLEET = SURVEILLANCE_POINTS + CHECKPOINTS
#: Who owns a surveillance point, in shares: Skynet's own (police), then the departments
#: that attached their cameras to the network instead of building their own.
POINT_OWNERS = {"police": 70, "city_management": 10, "street_lighting": 6, "traffic_police": 5,
                "internet_cafe_supervision": 3, "emergency_management": 2, "fire_brigade": 2,
                "environmental_protection": 2}
#: Cameras per construction site (housing attached 40+ site cameras to the network).
SITE_CAMERAS = 4
SITES = 11
FAULT_REASONS = ["power loss", "link down", "lens obstructed", "firmware fault"]


@dataclass
class Camera:
    camera_id: str
    district: str
    location: dict[str, Any]
    owner: str
    kind: Literal["SURVEILLANCE_POINT", "VEHICLE_CHECKPOINT", "TEMPORARY"]
    site: int | None = None  # construction site number, for housing's site cameras
    state: State = "ONLINE"

    def status(self, reported_at: str, *, state: State | None = None, reason: str | None = None) -> dict[str, Any]:
        """A camera_status record of this camera (its current state unless ``state``)."""
        record: dict[str, Any] = {
            "camera_id": self.camera_id, "status": state or self.state, "reported_at": reported_at,
            "location": self.location, "owner_department": self.owner, "kind": self.kind,
        }
        if reason is not None:
            record["reason"] = reason
        return record


def _location(rng: random.Random, district: str) -> dict[str, Any]:
    lat, lon, code = DISTRICTS[district]
    return {
        "latitude": round(lat + rng.uniform(-0.05, 0.05), 6),
        "longitude": round(lon + rng.uniform(-0.05, 0.05), 6),
        "district": district,
        "street": rng.choice(STREETS),
        "grid_cell": f"{code}-{rng.randint(1, 999):04d}",
    }


class CameraFleet:
    """``size`` cameras spread evenly over the districts, deterministic for ``seed``;
    a share (``initially_down``) starts OFFLINE or DEGRADED so availability starts near 97%."""

    def __init__(self, size: int = FLEET, *, seed: int = 0, initially_down: float = 0.03) -> None:
        if size < len(DISTRICTS):
            raise ValueError(f"a fleet has at least one camera per district ({len(DISTRICTS)}), not {size}")
        rng = random.Random(seed)
        districts = list(DISTRICTS)
        self.lock = threading.Lock()
        self.cameras: list[Camera] = []
        for n in range(size):
            district = districts[n % len(districts)]
            number = n // len(districts) + 1
            self.cameras.append(Camera(
                camera_id=f"CAM-{DISTRICTS[district][2]}-{number:05d}", district=district,
                location=_location(rng, district), owner="police", kind="SURVEILLANCE_POINT",
            ))
        order = list(range(size))
        rng.shuffle(order)
        taken: set[int] = set()
        for index in order[:min(CHECKPOINTS, size // 10)]:
            camera = self.cameras[index]
            camera.kind, camera.owner = "VEHICLE_CHECKPOINT", "traffic_police"
            taken.add(index)
        free = (i for i in order if i not in taken)
        for site in range(min(SITES, size // 50)):
            first = next(free)
            # a site's cameras stand together: same district (every len(districts)-th index), same place
            members = [i for i in range(first, size, len(districts)) if i not in taken][:SITE_CAMERAS]
            for index in members:
                camera = self.cameras[index]
                camera.owner, camera.site = "housing", site
                camera.location = dict(self.cameras[first].location)
                taken.add(index)
        for camera in self.cameras:
            if camera.owner == "police" and camera.kind == "SURVEILLANCE_POINT":
                camera.owner = rng.choices(list(POINT_OWNERS), weights=list(POINT_OWNERS.values()))[0]
            if rng.random() < initially_down:
                camera.state = rng.choice(["OFFLINE", "DEGRADED"])
        self.by_id = {c.camera_id: c for c in self.cameras}

    def __len__(self) -> int:
        return len(self.cameras)

    def checkpoints(self) -> list[Camera]:
        return [c for c in self.cameras if c.kind == "VEHICLE_CHECKPOINT"]

    def sites(self) -> dict[int, list[Camera]]:
        out: dict[int, list[Camera]] = {}
        for camera in self.cameras:
            if camera.site is not None:
                out.setdefault(camera.site, []).append(camera)
        return out

    def in_district(self, district: str) -> list[Camera]:
        return [c for c in self.cameras if c.district == district]

    def set_state(self, camera: Camera, state: State) -> bool:
        """Change a camera's state; False if it was already in it."""
        with self.lock:
            if camera.state == state:
                return False
            camera.state = state
            return True

    def availability(self) -> float:
        with self.lock:
            return sum(c.state == "ONLINE" for c in self.cameras) / len(self.cameras)
