"""Structured logging: JSON lines in production, a readable console on a terminal.

Log lines name files, codes, départements and counts; they never carry a person's
values. As a last line of defence, a processor masks anything shaped like a NIR or a
French phone number before rendering, so a mistake upstream cannot reach the log.

The level is chosen so that cron mail stays short: `--log-level`, else `FLUX_PMI_LOG_LEVEL`,
else WARNING for every command but `serve` (whose log is the journal: INFO). A run's events
carry its `run_id` through structlog's context variables (`bind_run`); threads that work
for the run must be started in a copy of the caller's context (`contextvars.copy_context()`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from .errors import ConfigError

# Bounded by anything but a digit or a hex letter, not by \b: `_` and letters are word characters, so a
# file named `NOM_2960392050832_x.xml` slipped through; hex letters stay a bound, or digests would be cut.
_EDGE_L, _EDGE_R, _SEP = r"(?<![0-9A-Fa-f])", r"(?![0-9A-Fa-f])", r"[ .]?"
_NIR = re.compile(_EDGE_L + _SEP.join([r"[1-478]", r"[0-9]{2}", r"(?:0[1-9]|1[0-2]|[2-9][0-9])",
                                        r"(?:[0-9]{2}|2[AB])", r"[0-9]{3}", r"[0-9]{3}"])
                  + rf"(?:{_SEP}[0-9]{{2}})?" + _EDGE_R)
_PHONE = re.compile(_EDGE_L + r"(?:0|\+33[ .]?|0033[ .]?)[1-9](?:[ .-]?[0-9]{2}){4}" + _EDGE_R)


def mask_personal(text: str) -> str:
    """`text` with whatever is shaped like a NIR or a French phone number replaced by `[masked]`."""
    return _PHONE.sub("[masked]", _NIR.sub("[masked]", text))


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_personal(value)
    if isinstance(value, list | tuple):
        return type(value)(_mask(v) for v in value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    return value


def mask_personal_shapes(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: _mask(v) for k, v in event.items()}


LEVELS = ("debug", "info", "warning", "error")
LEVEL_ENV = "FLUX_PMI_LOG_LEVEL"


def choose_level(explicit: str | None, *, default: str = "warning") -> str:
    """The log level: the command line's, else the environment's, else `default` (a bad value is refused)."""
    level = (explicit or os.environ.get(LEVEL_ENV) or default).strip().lower()
    if level not in LEVELS:
        raise ConfigError(LEVEL_ENV if explicit is None else "--log-level", "log level", " | ".join(LEVELS))
    return level


def bind_run(run_id: int) -> None:
    """From now on, every event this thread logs (and a thread started in a copy of its context) carries `run_id`."""
    structlog.contextvars.bind_contextvars(run_id=run_id)


def unbind_run() -> None:
    """The run is over: the events that follow are no longer its own."""
    structlog.contextvars.unbind_contextvars("run_id")


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
