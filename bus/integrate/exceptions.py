"""Errors of ``bus plan`` / ``bus apply`` / ``bus asyncapi``."""

from __future__ import annotations

from bus.errors import BusError


class IntegrateError(BusError):
    """The cluster or the registry could not be read or changed as planned."""


class ApplyRefused(IntegrateError):
    """``bus apply`` was asked to go on without confirmation where none can be given."""
