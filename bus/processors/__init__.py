"""Stateful processors of the city (faust-streaming): the camera registry and enrichment,
alarm storms and network flaps, linkage. Pure logic lives in ``cameras``, ``storms`` and
``linkage``; the faust
app that runs it against the broker is built by ``app.build_app(topology, settings)``."""

from bus.processors.cameras import CameraInfo, enrich_alarm, load_camera_file
from bus.processors.exceptions import CameraImportError, ProcessorError
from bus.processors.linkage import DEFAULT_RULES, LinkageRule, cases_for
from bus.processors.storms import StormConfig, StormMerger

__all__ = [
    "DEFAULT_RULES",
    "CameraImportError",
    "LinkageRule",
    "cases_for",
    "CameraInfo",
    "ProcessorError",
    "StormConfig",
    "StormMerger",
    "enrich_alarm",
    "load_camera_file",
]
