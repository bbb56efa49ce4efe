"""Simulators of the departments' systems, for `bus up --demo`: the Skynet platform and its
camera devices, the case system, the population base, the departments' webhook endpoints
and databases. :class:`DemoCity` builds them from the topology; :func:`demo_topology`
writes the topology's copy whose connectors talk to them."""

from bus.demo.simulators.base import Simulator
from bus.demo.simulators.cameras import CameraDevices, CameraPlatform
from bus.demo.simulators.cases import CaseSystem
from bus.demo.simulators.city import DemoCity, DemoCityConfig, Override
from bus.demo.simulators.databases import DemoDatabases
from bus.demo.simulators.endpoints import DepartmentEndpoints
from bus.demo.simulators.exceptions import PeerUnreachable, SimulatorError
from bus.demo.simulators.fleet import CameraFleet
from bus.demo.simulators.population import ChangeTable, CsvExports, PopulationRegistry
from bus.demo.simulators.topology import demo_topology

__all__ = [
    "CameraDevices", "CameraFleet", "CameraPlatform", "CaseSystem", "ChangeTable", "CsvExports", "DemoCity",
    "DemoCityConfig", "DemoDatabases", "DepartmentEndpoints", "Override", "PeerUnreachable", "PopulationRegistry",
    "Simulator", "SimulatorError", "demo_topology",
]
