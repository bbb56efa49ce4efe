"""structlog set-up: readable lines on a terminal, JSON lines otherwise (production).

Every line may carry ``department``, ``connector``, ``event_type`` and ``trace_id``; bind
them with ``structlog.contextvars.bound_contextvars`` or pass them as keywords. Values
whose key names a secret are redacted before rendering, wherever they come from.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_SECRET_WORDS = ("password", "secret", "token", "hmac_key", "api_key", "authorization")


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = "***"
    return event


def _console_renderer() -> structlog.dev.ConsoleRenderer:
    """Readable lines for a terminal, with tracebacks that never show local variables:
    structlog's default (rich) traceback prints every frame's locals, among them a
    library's copy of a DSN with its password or a token being checked."""
    if structlog.dev.rich is not None:
        formatter: Any = structlog.dev.RichTracebackFormatter(show_locals=False)
    else:
        formatter = structlog.dev.plain_traceback
    return structlog.dev.ConsoleRenderer(exception_formatter=formatter)


def configure(level: str | None = None, *, json: bool | None = None) -> None:
    level_name = (level or os.environ.get("BUS_LOG_LEVEL", "INFO")).upper()
    numeric = logging.getLevelName(level_name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    use_json = (not sys.stderr.isatty()) if json is None else json
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if use_json else _console_renderer()
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (librdkafka, uvicorn, faust).
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
