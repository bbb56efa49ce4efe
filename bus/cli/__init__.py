"""The `bus` command: a thin layer over the library. Nothing imports it."""

from bus.cli.app import app, main

__all__ = ["app", "main"]
