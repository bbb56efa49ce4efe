"""The root of every error the bus raises on purpose.

Each concern has its own ``exceptions.py`` with subclasses; they keep their cause
(``raise ... from exc``) and, where a record failed, the raw record.
"""

from __future__ import annotations


class BusError(Exception):
    """Anything the bus reports to a user. The message says what to do."""

    exit_code: int = 1


class ConfigError(BusError):
    """Settings (environment, command line) that cannot work."""
