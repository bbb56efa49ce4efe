"""The demo city's departments' systems, built together from one config and the topology.

:class:`DemoCity` reads the topology's connectors and builds, for each kind it knows, the
system on the other side:

================================  =====================================================
connector (type, what)             simulator
================================  =====================================================
http_ingest publishing alarms      :class:`CameraPlatform` (HTTP, bearer token)
mqtt_source publishing statuses    :class:`CameraDevices` (MQTT heartbeats)
rest_poller publishing city_case   :class:`CaseSystem` (its REST API)
postgres_source (population)       :class:`PopulationRegistry` in a demo database, or CSV
                                   exports for a ``file_drop`` connector without PostgreSQL
http_webhook_sink                  an endpoint of :class:`DepartmentEndpoints`
postgres_sink                      a demo database
================================  =====================================================

Use::

    demo = DemoCity(DemoCityConfig(), topology).open()  # the systems the connectors read and write
    os.environ.update(demo.env)                            # secrets, by the topology's env: names
    path = demo_topology("topology.yaml", demo, out_dir)   # connectors pointed at the simulators
    ...start the bus with `path`...
    demo.start()                                           # the systems that push into the bus
    demo.stats()
    demo.stop()                                            # everything; the demo databases are dropped

Secrets (ingest token, HMAC keys) are random per run; the environment names are those of
the topology's ``env:`` references (a ``file:`` reference becomes ``env:BUS_DEMO_...``).
"""

from __future__ import annotations

import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from bus.demo.simulators.base import Simulator, free_port
from bus.demo.simulators.cameras import CameraDevices, CameraPlatform
from bus.demo.simulators.cases import CaseSystem
from bus.demo.simulators.databases import DEFAULT_ADMIN_DSN, DemoDatabases, row_count
from bus.demo.simulators.endpoints import DepartmentEndpoints
from bus.demo.simulators.fleet import FLEET, CameraFleet
from bus.demo.simulators.population import (
    ChangeStore,
    ChangeTable,
    CsvExports,
    PopulationRegistry,
)
from bus.topology.models import Connector, Topology


class DemoCityConfig(BaseModel):
    """Settings of the demo city's simulators. Ports 0: free ports chosen at open()."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(2026, description="Seed of every simulator: the same seed, the same city.")
    host: str = Field("127.0.0.1", description="Address the simulated servers and the ingest connector use.")
    ingest_port: int = Field(0, ge=0, le=65535, description="Port of the HTTP ingest connector.")
    case_port: int = Field(0, ge=0, le=65535, description="Port of the case system's API.")
    webhook_port: int = Field(0, ge=0, le=65535, description="Port of the departments' webhook endpoints.")
    mqtt_host: str = Field("127.0.0.1", description="MQTT broker of the camera devices.")
    mqtt_port: int = Field(1883, ge=1, le=65535, description="Its port.")
    postgres_dsn: str = Field(DEFAULT_ADMIN_DSN, description="PostgreSQL server (a user that may create databases) "
                              "for the demo databases; unreachable: the population base drops CSV files instead.")
    drop_folder: Path | None = Field(None, description="Folder of the CSV exports without PostgreSQL (default: a "
                                     "new temporary folder).")
    cameras: int = Field(FLEET, ge=5, description="Cameras of the Skynet fleet (Liuzhou's: 6,381 surveillance "
                         "points and 153 vehicle checkpoints).")
    alarm_rate: float = Field(20.0, ge=0, description="Alarms per second between scenarios.")
    fault_rate: float = Field(0.02, ge=0, description="Single camera faults per second.")
    heartbeat_rate: float = Field(20.0, ge=0, description="MQTT heartbeats per second, the fleet in turn.")
    scenario_every_s: float = Field(40.0, ge=0, description="Seconds between two scenarios (fire storm, "
                                    "construction-site burst, network flap, in turn); 0: none.")
    storm_alarms: int = Field(60, ge=1, description="Alarms of a fire storm.")
    site_burst_alarms: int = Field(400, ge=1, description="Alarms of a construction-site burst (within 1 s).")
    flap_cameras: int = Field(300, ge=1, description="Cameras a network flap takes offline.")
    flap_outage_s: float = Field(20.0, gt=0, description="Seconds until flapped cameras are back online.")
    new_case_rate: float = Field(0.5, ge=0, description="New city-management cases per second.")
    case_step_after_s: tuple[float, float] = Field((5.0, 30.0), description="Seconds between two steps of a case.")
    population_rows: int = Field(50_000, ge=0, description="Changes of the population base's initial load.")
    population_change_rate: float = Field(2.0, ge=0, description="Population changes per second after it.")


@dataclass
class Override:
    """What the demo copy of the topology changes in one connector: config values set (or,
    with ``type``, the connector's type and its whole config replaced)."""

    config: dict[str, Any]
    type: str | None = None


@dataclass
class _Secrets:
    env: dict[str, str] = field(default_factory=dict)

    def ref(self, connector: Connector, current: Any, what: str, value: str) -> str:
        """``env:NAME`` holding ``value``: the connector's own env name, else a demo name."""
        if isinstance(current, str) and current.startswith("env:"):
            name = current[4:]
        else:
            name = "BUS_DEMO_" + re.sub(r"[^A-Z0-9]+", "_", f"{connector.name}_{what}".upper())
        self.env[name] = value
        return f"env:{name}"


def _first(topology: Topology, kind: str, event_type: str) -> Connector | None:
    return next((c for c in topology.connectors if c.type == kind and event_type in (c.publishes or [])), None)


class DemoCity:
    """The departments' systems of the demo city (see the module's docstring)."""

    def __init__(self, config: DemoCityConfig, topology: Topology) -> None:
        self.config = config
        self.topology = topology
        self.run_id = secrets.token_hex(4)
        self.overrides: dict[str, Override] = {}
        self.urls: dict[str, str] = {}  # connector name -> the URL it uses
        self.tables: dict[str, tuple[str, str]] = {}  # postgres_sink name -> (DSN, table)
        self.simulators: dict[str, Simulator] = {}
        self.population_mode: str | None = None  # "postgres" or "file_drop"
        self.databases = DemoDatabases(config.postgres_dsn, prefix=f"citybus_demo_{self.run_id}")
        self.fleet = CameraFleet(config.cameras, seed=config.seed)
        self._secrets = _Secrets()
        self._pushing: list[Simulator] = []
        self._opened = False

    @property
    def env(self) -> dict[str, str]:
        """Environment variable -> value, for every secret the demo topology refers to."""
        return dict(self._secrets.env)

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> Self:
        """Build everything and start the systems the connectors read from or deliver to (case
        system, population registry, endpoints, databases). Idempotent."""
        if self._opened:
            return self
        self._opened = True
        try:
            postgres = self.databases.reachable()
            for connector in self.topology.connectors:
                if connector.type == "http_webhook_sink":
                    self._endpoint(connector)
                elif connector.type == "postgres_sink" and postgres:
                    self._sink_database(connector)
            self._cases()
            self._population(postgres)
            self._cameras()
        except BaseException:
            self.stop()
            raise
        return self

    def start(self) -> Self:
        """Start the systems that push into the bus (camera platform, camera devices): call it
        once their connectors serve."""
        self.open()
        for simulator in self._pushing:
            simulator.start()
            self.simulators[simulator.name] = simulator
        return self

    def stop_pushing(self) -> None:
        """Stop the systems that push into the bus (before the bus stops: nothing in flight)."""
        for simulator in self._pushing:
            simulator.stop()

    def stop(self) -> None:
        """Stop every simulator and drop the demo databases. Safe to call twice."""
        for simulator in [*self._pushing, *self.simulators.values()]:
            simulator.stop()
        self.databases.drop_all()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Each simulator's counters, and the rows in each sink database."""
        out: dict[str, Any] = {name: s.stats() for name, s in self.simulators.items()}
        for name, (dsn, table) in self.tables.items():
            try:
                out[name] = {"rows": row_count(dsn, table)}
            except psycopg.Error as exc:  # a count is information for the status line, never a failure
                out[name] = {"error": type(exc).__name__}
        return out

    # -- the systems -----------------------------------------------------------------------------

    def _started(self, simulator: Simulator) -> Simulator:
        self.simulators[simulator.name] = simulator.start()
        return simulator

    def _endpoint(self, connector: Connector) -> None:
        endpoints = self.simulators.get(DepartmentEndpoints.name)
        if not isinstance(endpoints, DepartmentEndpoints):
            endpoints = DepartmentEndpoints(host=self.config.host, port=self.config.webhook_port)
            self._started(endpoints)
        key = secrets.token_hex(32)
        url = endpoints.add(connector.name, connector.department, key)
        self.urls[connector.name] = url
        hmac_ref = self._secrets.ref(connector, connector.config.get("hmac_key"), "hmac_key", key)
        self.overrides[connector.name] = Override({"url": url, "hmac_key": hmac_ref})

    def _sink_database(self, connector: Connector) -> None:
        dsn = self.databases.create(connector.name.replace("-", "_"))
        self.tables[connector.name] = (dsn, str(connector.config.get("table", "")))
        self.overrides[connector.name] = Override(
            {"dsn": self._secrets.ref(connector, connector.config.get("dsn"), "dsn", dsn)})

    def _cases(self) -> None:
        connector = _first(self.topology, "rest_poller", "city_case")
        if connector is None:
            return
        token = secrets.token_urlsafe(24) if connector.config.get("bearer_token") else None
        system = CaseSystem(host=self.config.host, port=self.config.case_port, token=token,
                            seed=self.config.seed + 1, new_case_rate=self.config.new_case_rate,
                            step_after_s=self.config.case_step_after_s)
        self._started(system)
        self.urls[connector.name] = system.url
        config: dict[str, Any] = {"url": system.url}
        if token is not None:
            config["bearer_token"] = self._secrets.ref(connector, connector.config["bearer_token"], "token", token)
        self.overrides[connector.name] = Override(config)

    def _population(self, postgres: bool) -> None:
        connector = _first(self.topology, "postgres_source", "population_change")
        if connector is None:
            return
        store: ChangeStore
        if postgres:
            dsn = self.databases.create("population_base")
            table = str(connector.config.get("table", "population.person_change"))
            store = ChangeTable(dsn, table)
            self.population_mode = "postgres"
            self.overrides[connector.name] = Override(
                {"dsn": self._secrets.ref(connector, connector.config.get("dsn"), "dsn", dsn)})
        else:
            folder = self.config.drop_folder or Path(tempfile.mkdtemp(prefix="citybus-demo-population-"))
            store = CsvExports(folder)
            self.population_mode = "file_drop"
            self.overrides[connector.name] = Override(
                {"path": str(folder), "pattern": "*.csv", "event_type": "population_change", "settle_s": 0.5,
                 "poll_interval_s": 1.0}, type="file_drop")
        self._started(PopulationRegistry(store, seed=self.config.seed + 2, initial_rows=self.config.population_rows,
                                         change_rate=self.config.population_change_rate))

    def _cameras(self) -> None:
        config = self.config
        ingest = _first(self.topology, "http_ingest", "camera_alarm")
        if ingest is not None:
            port = config.ingest_port or free_port(config.host)
            token = secrets.token_urlsafe(24)
            path = str(ingest.config.get("path", "/ingest")).rstrip("/")
            url = f"http://{config.host}:{port}{path}"
            self.urls[ingest.name] = url
            auth = ingest.config.get("auth") or {}
            self.overrides[ingest.name] = Override({
                "host": config.host, "port": port,
                "auth": {"token": self._secrets.ref(ingest, auth.get("token"), "token", token)}})
            self._pushing.append(CameraPlatform(
                url, token, self.fleet, seed=config.seed + 3, alarm_rate=config.alarm_rate,
                fault_rate=config.fault_rate, scenario_every_s=config.scenario_every_s,
                storm_alarms=config.storm_alarms, site_burst_alarms=config.site_burst_alarms,
                flap_cameras=config.flap_cameras, flap_outage_s=config.flap_outage_s))
        devices = _first(self.topology, "mqtt_source", "camera_status")
        if devices is not None:
            prefix = f"citybus-demo/{self.run_id}/cameras"
            self.urls[devices.name] = f"mqtt://{config.mqtt_host}:{config.mqtt_port}/{prefix}/+/status"
            self.overrides[devices.name] = Override({
                "host": config.mqtt_host, "port": config.mqtt_port, "topics": [f"{prefix}/+/status"],
                "client_id": f"citybus-{devices.name}-{self.run_id}"[:128],
                "session_expiry_s": 600,  # the run's session is not kept for a day after the demo
            })
            self._pushing.append(CameraDevices(
                self.fleet, host=config.mqtt_host, port=config.mqtt_port, topic_prefix=prefix,
                client_id=f"skynet-devices-{self.run_id}", seed=config.seed + 4,
                heartbeat_rate=config.heartbeat_rate))
