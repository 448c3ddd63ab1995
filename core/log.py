"""Structured logging: JSON lines in production, a readable console on a terminal.

Log lines name files, codes, départements and counts; they never carry a person's
values. As a last line of defence, a processor masks anything shaped like a NIR or a
French phone number before rendering, so a mistake upstream cannot reach the log.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_NIR = re.compile(r"\b[1-478][0-9]{2}(?:0[1-9]|1[0-2]|[2-9][0-9])(?:[0-9]{2}|2[AB])[0-9]{6}(?:[0-9]{2})?\b")
_PHONE = re.compile(r"\b0[1-9](?:[ .]?[0-9]{2}){4}\b")


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _PHONE.sub("[masked]", _NIR.sub("[masked]", value))
    return value


def mask_personal_shapes(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: _mask(v) for k, v in event.items()}


def configure(*, json: bool | None = None, stream: TextIO | None = None, level: str = "INFO") -> None:
    """Set up structlog once per process. `json=None` picks JSON unless stderr is a terminal."""
    stream = stream or sys.stderr
    if json is None:
        forced = os.environ.get("FLUX_PMI_LOG_FORMAT")
        json = forced == "json" or (forced != "console" and not stream.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_personal_shapes,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get(name: str = "flux-pmi") -> Any:
    return structlog.get_logger(name)
