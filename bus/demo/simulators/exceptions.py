"""Errors of the departments' simulators."""

from __future__ import annotations

from bus.errors import BusError


class SimulatorError(BusError):
    """A simulator that cannot do its work; the message says what to fix."""


class PeerUnreachable(SimulatorError):
    """A service a simulator needs (PostgreSQL, the MQTT broker) does not answer."""
