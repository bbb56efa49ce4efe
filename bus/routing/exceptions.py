from __future__ import annotations

from bus.errors import BusError


class RoutingError(BusError):
    """The router cannot start or cannot go on."""


class UnsupportedSubscription(RoutingError):
    """A subscription the router cannot carry out (says what to change)."""
