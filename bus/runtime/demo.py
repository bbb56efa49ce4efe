"""The demo city around `bus up --demo`: the departments' systems, simulated.

Before the bus starts, :func:`demo_systems` opens the systems the connectors read from and
deliver to (the case system's API, the population registry, the departments' webhook
endpoints and databases), puts their secrets in this process's environment under the
names the topology's ``env:`` references use, and writes a copy of the topology whose
connectors point at them. Once the connectors serve, :meth:`DemoSystems.start` starts the
systems that push (the camera platform over HTTP ingest, the camera devices over MQTT).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bus.demo.simulators import DemoCity, DemoCityConfig, demo_topology
from bus.topology.validate import load_topology

Say = Callable[[str], None]


@dataclass
class DemoSystems:
    city: DemoCity
    topology_path: Path

    def start(self) -> None:
        self.city.start()

    def stop_pushing(self) -> None:
        self.city.stop_pushing()

    def delivered(self) -> int:
        """Records the departments' endpoints accepted (each idempotency key once)."""
        endpoints = self.city.stats().get("department-endpoints", {})
        return int(endpoints.get("delivered", 0))


@contextlib.contextmanager
def demo_systems(topology_path: Path, say: Say, config: DemoCityConfig | None = None) -> Iterator[DemoSystems]:
    config = config or DemoCityConfig()
    say(f"demo: opening the departments' systems ({config.cameras} cameras, a case system, a population "
        f"registry of {config.population_rows} changes, webhook endpoints) ...")
    with tempfile.TemporaryDirectory(prefix="bus-demo-") as folder, DemoCity(config, load_topology(topology_path)) as city:
        saved = {name: os.environ.get(name) for name in city.env}
        os.environ.update(city.env)  # the connectors resolve their env: secrets from here
        try:
            path = demo_topology(topology_path, city, Path(folder))
            say(f"demo: connectors pointed at the simulated systems ({path})")
            yield DemoSystems(city, path)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
