from __future__ import annotations

from bus.errors import BusError


class PublishError(BusError):
    """A record could not be published."""


class PublishRefused(PublishError):
    """The department may not publish this event type."""


class InputInvalid(PublishError):
    """Input that is not a JSON record (bad JSON, bad encoding, too large)."""
