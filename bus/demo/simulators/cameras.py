"""The Skynet video platform and its camera devices, as the real ones talk to the bus.

- :class:`CameraPlatform` pushes over HTTP to the ``http_ingest`` connector (bearer
  token; JSON lines to ``<url>/<event_type>/batch``, a single record to
  ``<url>/<event_type>``). It first announces the status of every camera (so the
  processors' camera table knows each one's place and owner), then sends alarms at a
  steady rate with the city's usual scenarios in turn: a fire storm (one camera reporting
  smoke again and again, its severity rising), a construction-site burst (a site's
  cameras reporting intrusions by the hundred within a second) and a network flap
  (hundreds of cameras of a district offline within seconds, back online later). Single
  faults come and get repaired in between. Like the real platform it sends in order from
  one sender and answers 429 and 503 by waiting Retry-After and sending the same request
  again; other refusals are counted and logged.
- :class:`CameraDevices` are the cameras that report their own heartbeat over MQTT
  (QoS 1) to ``<prefix>/<camera id>/status``: a camera_status record of the state the
  camera is in. An offline camera is silent.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bus.demo.samples import DISTRICTS, camera_alarm
from bus.demo.simulators.base import Pacer, Simulator, now_iso
from bus.demo.simulators.exceptions import PeerUnreachable
from bus.demo.simulators.fleet import FAULT_REASONS, Camera, CameraFleet, State

#: The steady mix of alarm types (offline alarms come with faults and flaps, not here).
ALARM_MIX = {"INTRUSION": 40, "CROWD_GATHERING": 12, "WATCHLIST_VEHICLE": 35, "FIRE_SMOKE": 3, "TAMPERING": 1}
SCENARIOS = ("fire_storm", "site_burst", "network_flap")
#: Most records the platform puts in one batch request.
BATCH_MAX = 500

Make = Callable[[], tuple[str, dict[str, Any]]]


def _retry_after(value: str | None) -> float:
    try:
        return max(0.05, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0  # an HTTP date: the ingest connector sends seconds, so this is rare


class CameraPlatform(Simulator):
    """The Skynet platform: camera statuses and alarms pushed to ``ingest_url``.

    Rates are per second; ``scenario_every_s`` (0: none) is the time between two
    scenarios, which come in the order of :data:`SCENARIOS`."""

    name = "camera-platform"

    def __init__(
        self,
        ingest_url: str,
        token: str,
        fleet: CameraFleet,
        *,
        seed: int = 0,
        alarm_rate: float = 20.0,
        located_share: float = 0.5,
        fault_rate: float = 0.02,
        repair_after_s: tuple[float, float] = (30.0, 120.0),
        scenario_every_s: float = 40.0,
        storm_alarms: int = 60,
        storm_seconds: float = 6.0,
        site_burst_alarms: int = 400,
        site_burst_seconds: float = 1.0,
        flap_cameras: int = 300,
        flap_seconds: float = 3.0,
        flap_outage_s: float = 20.0,
        tick_s: float = 0.1,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(seed=seed)
        self.url = ingest_url.rstrip("/")
        self.token = token
        self.fleet = fleet
        self.alarm_rate = alarm_rate
        self.located_share = located_share
        self.fault_rate = fault_rate
        self.repair_after_s = repair_after_s
        self.scenario_every_s = scenario_every_s
        self.storm_alarms, self.storm_seconds = storm_alarms, storm_seconds
        self.site_burst_alarms, self.site_burst_seconds = site_burst_alarms, site_burst_seconds
        self.flap_cameras, self.flap_seconds, self.flap_outage_s = flap_cameras, flap_seconds, flap_outage_s
        self.tick_s = tick_s
        self.timeout_s = timeout_s
        self.announced = threading.Event()
        self._client: httpx.Client | None = None
        self._schedule: list[tuple[float, int, Make]] = []
        self._seq = itertools.count()
        self._scenarios = itertools.cycle(SCENARIOS)
        self._checkpoints = fleet.checkpoints()

    def open(self) -> None:
        self._client = httpx.Client(timeout=self.timeout_s, headers={
            "Authorization": f"Bearer {self.token}", "User-Agent": "skynet-platform-simulator"})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def loops(self) -> list[Callable[[], None]]:
        return [self._run]

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "cameras": len(self.fleet), "availability": round(self.fleet.availability(), 4)}

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        if not self.announced.is_set():
            self.announce()
        alarms = Pacer(self.alarm_rate)
        faults = Pacer(self.fault_rate)
        next_scenario = time.monotonic() + self.scenario_every_s
        while not self.stopping.wait(self.tick_s):
            now = time.monotonic()
            if self.scenario_every_s > 0 and now >= next_scenario:
                self.scenario(next(self._scenarios))
                next_scenario = now + self.scenario_every_s
            for _ in range(faults.due()):
                self.fault()
            out: dict[str, list[dict[str, Any]]] = {"camera_status": [], "camera_alarm": []}
            while self._schedule and self._schedule[0][0] <= now:
                event_type, record = heapq.heappop(self._schedule)[2]()
                out[event_type].append(record)
            out["camera_alarm"] += [self.steady_alarm() for _ in range(alarms.due())]
            for event_type, records in out.items():  # statuses first: an offline alarm follows its status
                if records:
                    self.send(event_type, records)

    def announce(self) -> None:
        """The status of every camera, in batches: the processors learn the fleet."""
        reported = now_iso()
        for start in range(0, len(self.fleet), BATCH_MAX):
            if self.stopping.is_set():
                return
            chunk = self.fleet.cameras[start:start + BATCH_MAX]
            self.send("camera_status", [c.status(reported) for c in chunk])
        self.announced.set()

    # -- what the platform reports ---------------------------------------------------------

    def alarm(self, camera: Camera, alarm_type: str, severity: str | None = None) -> dict[str, Any]:
        base = camera_alarm(self.rng)  # the samples' id, severity and confidence; the rest is this camera's
        record: dict[str, Any] = {
            "alarm_id": base["alarm_id"], "camera_id": camera.camera_id, "alarm_type": alarm_type,
            "severity": severity or base["severity"], "occurred_at": now_iso(), "confidence": base["confidence"],
        }
        if self.rng.random() < self.located_share:  # the others get their place from the processors' table
            record["location"], record["owner_department"] = camera.location, camera.owner
        if alarm_type == "WATCHLIST_VEHICLE":
            record["plate_number"] = f"桂B{self.rng.randint(10000, 99999)}"
        if alarm_type in ("WATCHLIST_VEHICLE", "FIRE_SMOKE"):
            record["snapshot_url"] = f"https://skynet.city.local/snapshots/{record['alarm_id']}.jpg"
        return record

    def steady_alarm(self) -> dict[str, Any]:
        alarm_type = self.rng.choices(list(ALARM_MIX), weights=list(ALARM_MIX.values()))[0]
        if alarm_type == "WATCHLIST_VEHICLE" and self._checkpoints:
            camera = self.rng.choice(self._checkpoints)
        else:
            camera = self.rng.choice(self.fleet.cameras)
        return self.alarm(camera, alarm_type)

    def _change(self, camera: Camera, state: State, reason: str | None = None) -> Make:
        """At its time: the camera's new state, reported (with an offline alarm when it goes down)."""

        def make() -> tuple[str, dict[str, Any]]:
            self.fleet.set_state(camera, state)
            return "camera_status", camera.status(now_iso(), reason=reason)

        return make

    def _later(self, delay_s: float, make: Make) -> None:
        heapq.heappush(self._schedule, (time.monotonic() + delay_s, next(self._seq), make))

    def _alarm_later(self, delay_s: float, camera: Camera, alarm_type: str, severity: str | None = None) -> None:
        def make() -> tuple[str, dict[str, Any]]:
            return "camera_alarm", self.alarm(camera, alarm_type, severity)

        self._later(delay_s, make)

    def _offline(self, camera: Camera, delay_s: float, reason: str) -> None:
        self._later(delay_s, self._change(camera, "OFFLINE", reason))
        self._alarm_later(delay_s, camera, "CAMERA_OFFLINE", "MEDIUM")

    def fault(self) -> None:
        """One online camera fails now and is repaired a while later."""
        camera = self.rng.choice(self.fleet.cameras)
        if camera.state != "ONLINE":
            return
        self.count("faults")
        self._offline(camera, 0.0, self.rng.choice(FAULT_REASONS))
        self._later(self.rng.uniform(*self.repair_after_s), self._change(camera, "ONLINE"))

    def scenario(self, name: str) -> None:
        {"fire_storm": self.fire_storm, "site_burst": self.site_burst, "network_flap": self.network_flap}[name]()

    def fire_storm(self) -> None:
        """One camera sees smoke again and again; the severity rises as the fire grows."""
        camera = self.rng.choice(self.fleet.cameras)
        self.count("fire_storms")
        for n in range(self.storm_alarms):
            severity = ("MEDIUM", "HIGH", "CRITICAL")[min(2, 3 * n // max(1, self.storm_alarms))]
            self._alarm_later(self.storm_seconds * n / self.storm_alarms, camera, "FIRE_SMOKE", severity)

    def site_burst(self) -> None:
        """A construction site's cameras report intrusions by the hundred within a second."""
        sites = self.fleet.sites()
        if not sites:
            return
        cameras = sites[self.rng.choice(sorted(sites))]
        self.count("site_bursts")
        for n in range(self.site_burst_alarms):
            kind = "TAMPERING" if n % 50 == 49 else "INTRUSION"
            self._alarm_later(self.site_burst_seconds * n / self.site_burst_alarms, self.rng.choice(cameras), kind)

    def network_flap(self) -> None:
        """A district's link flaps: hundreds of its cameras go offline within seconds and
        come back once it is restored."""
        district = self.rng.choice(list(DISTRICTS))
        online = [c for c in self.fleet.in_district(district) if c.state == "ONLINE"]
        down = self.rng.sample(online, min(self.flap_cameras, len(online)))
        self.count("network_flaps")
        for n, camera in enumerate(down):
            at = self.flap_seconds * n / max(1, len(down))
            self._offline(camera, at, "link down")
            self._later(self.flap_outage_s + at, self._change(camera, "ONLINE"))

    # -- HTTP --------------------------------------------------------------------------------

    def send(self, event_type: str, records: list[dict[str, Any]]) -> None:
        """Deliver ``records`` in order, each request until it is accepted or refused."""
        for start in range(0, len(records), BATCH_MAX):
            chunk = records[start:start + BATCH_MAX]
            if len(chunk) == 1:
                url, body, kind = f"{self.url}/{event_type}", json.dumps(chunk[0]), "application/json"
            else:
                url = f"{self.url}/{event_type}/batch"
                body, kind = "\n".join(json.dumps(r, ensure_ascii=False) for r in chunk), "application/x-ndjson"
            self._post(url, body.encode("utf-8"), kind, event_type, len(chunk))

    def _post(self, url: str, body: bytes, kind: str, event_type: str, records: int) -> None:
        assert self._client is not None
        self.count(f"{event_type}_sent", records)
        while not self.stopping.is_set():
            try:
                answer = self._client.post(url, content=body, headers={"Content-Type": kind})
            except httpx.TransportError as exc:  # the ingest is not up yet, or restarting: keep the records
                self.count("unreachable")
                self.last_error = f"{url}: {type(exc).__name__}"
                self.stopping.wait(1.0)
                continue
            if answer.status_code == 202:
                self.count(f"{event_type}_accepted", records)
                return
            if answer.status_code in (429, 503):
                self.count("retried")
                self.stopping.wait(_retry_after(answer.headers.get("retry-after")))
                continue
            self.count(f"{event_type}_refused", records)
            self.last_error = f"{url} answered {answer.status_code}: {answer.text[:300]}"
            return


class CameraDevices(Simulator):
    """Camera heartbeats over MQTT: ``heartbeat_rate`` per second, the fleet in turn."""

    name = "camera-devices"

    def __init__(
        self,
        fleet: CameraFleet,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        topic_prefix: str = "cameras",
        client_id: str = "skynet-devices-simulator",
        seed: int = 0,
        heartbeat_rate: float = 20.0,
        tick_s: float = 0.1,
        connect_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(seed=seed)
        self.fleet = fleet
        self.host, self.port = host, port
        self.topic_prefix = topic_prefix.rstrip("/")
        self.client_id = client_id
        self.heartbeat_rate = heartbeat_rate
        self.tick_s = tick_s
        self.connect_timeout_s = connect_timeout_s
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        order = list(fleet.cameras)
        self.rng.shuffle(order)
        self._turn = itertools.cycle(order)

    def topic(self, camera_id: str) -> str:
        return f"{self.topic_prefix}/{camera_id}/status"

    def open(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        client.on_connect = lambda c, u, f, reason, p: None if reason.is_failure else self._connected.set()
        client.on_publish = lambda c, u, mid, reason, p: self.count("acked")
        try:
            client.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise PeerUnreachable(
                f"the camera devices cannot reach the MQTT broker at {self.host}:{self.port}: {exc}; start Mosquitto "
                "there or point the demo at another broker"
            ) from None
        client.loop_start()
        if not self._connected.wait(self.connect_timeout_s):
            client.loop_stop()
            raise PeerUnreachable(f"the MQTT broker at {self.host}:{self.port} did not accept the camera devices "
                                  f"within {self.connect_timeout_s:g} s")
        self._client = client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def loops(self) -> list[Callable[[], None]]:
        return [self._run]

    def _run(self) -> None:
        pacer = Pacer(self.heartbeat_rate)
        while not self.stopping.wait(self.tick_s):
            for _ in range(pacer.due()):
                self.heartbeat(next(self._turn))

    def heartbeat(self, camera: Camera) -> None:
        if camera.state == "OFFLINE":  # a camera that is down sends nothing
            self.count("silent")
            return
        assert self._client is not None
        payload = json.dumps(camera.status(now_iso()), ensure_ascii=False)
        self._client.publish(self.topic(camera.camera_id), payload, qos=1)
        self.count("published")
