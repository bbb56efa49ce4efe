"""The work-order sink through the bus's connector conformance suite, as its authors run it:

    bus broker & bus registry &      # or any bus: BUS_BOOTSTRAP_SERVERS, BUS_REGISTRY_URL
    pytest test_work_orders.py       # BUS_TOPOLOGY names the city's topology.yaml
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bus.connect.conformance import (
    BadInput, Bus, Env, SinkHarness, bus_from_environment, check_config_model, check_live,
)
from bus.demo import samples
from work_orders import WorkOrderFolder


class WorkOrderFolderHarness(SinkHarness):
    """The suite feeds the sink cases on a topic of its own, as the router fills the
    subscription's topic; the maintenance system is played by :meth:`delivered`."""

    type: ClassVar[str] = "work_order_folder"
    connector_class = WorkOrderFolder  # not installed yet: the suite loads this class
    event_type: ClassVar[str] = "city_case"
    department: ClassVar[str] = "city_management"  # who publishes cases
    identity: ClassVar[str] = "case_id"

    @classmethod
    def static_config(cls) -> dict[str, Any]:
        return {"folder": "/srv/maintenance/inbox"}

    def entry(self) -> dict[str, Any]:
        self.inbox = self.env.tmp_path / "inbox"
        self.imported = self.env.tmp_path / "imported"
        self.imported.mkdir()
        return {"name": self.named("street-lighting-work-orders"), "type": self.type,
                "department": "street_lighting", "subscription": "streetlight-cases",
                "config": {"folder": str(self.inbox)}}

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """A broken street light, with the number of its pole."""
        pole = f"SL-{rng.randrange(10**6):06d}"
        return samples.sample("city_case", rng) | {"category": "STREET_LIGHT", "component_id": pole}

    def feed_bad(self) -> BadInput:
        """A case that names no pole: the sink dead-letters it."""
        case = self.record() | {"component_id": None}
        partition, offset = self.put(case)
        return BadInput(stage="TASK_PUT", headers={"__connect.errors.topic": self.topic or "",
                                                   "__connect.errors.partition": str(partition),
                                                   "__connect.errors.offset": str(offset)})

    def delivered(self) -> list[str]:
        """Import what the inbox holds, as the maintenance system does (each file once, moved
        away), and list every order imported so far: an update written twice shows twice."""
        for path in sorted(self.inbox.glob("*.json")):
            path.rename(self.imported / f"{len(list(self.imported.iterdir())):06d}-{path.name}")
        return [json.loads(path.read_text())["order_id"] for path in sorted(self.imported.iterdir())]


@pytest.fixture(scope="session")
def bus() -> Bus:
    return bus_from_environment()


def test_the_settings_are_documented_and_unknown_ones_refused() -> None:
    check_config_model(WorkOrderFolderHarness)


def test_delivers_dead_letters_stops_and_restarts_without_loss_or_repeat(
    bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:
    check_live(WorkOrderFolderHarness(Env(bus, tmp_path, monkeypatch, request)))
