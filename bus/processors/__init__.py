"""Stateful processors of the city (faust-streaming): the camera registry and enrichment,
alarm storms and network flaps, linkage, the maintenance SLA and fleet availability. Pure
logic lives in ``cameras``, ``storms``, ``linkage`` and ``sla``; the faust app that runs it
against the broker is :class:`app.CityProcessors` (``app.build_app(topology, settings)``)."""

from bus.processors.cameras import CameraInfo, enrich_alarm, load_camera_file
from bus.processors.exceptions import CameraImportError, ProcessorError
from bus.processors.linkage import CompiledRule, cases_for, compile_rules
from bus.processors.sla import Availability, SlaPolicy, SlaTracker, fleet_availability
from bus.processors.storms import Emission, StormConfig, StormMerger

__all__ = [
    "Availability",
    "CameraImportError",
    "CameraInfo",
    "CompiledRule",
    "Emission",
    "ProcessorError",
    "SlaPolicy",
    "SlaTracker",
    "StormConfig",
    "StormMerger",
    "cases_for",
    "compile_rules",
    "enrich_alarm",
    "fleet_availability",
    "load_camera_file",
]
