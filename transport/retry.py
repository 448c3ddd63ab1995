"""One retry policy for the transports' transient failures: exponential backoff with jitter (tenacity).

A token endpoint or a gateway that hiccups once should not cost a whole delivery attempt, and ~100
départements retrying in step would hit it together: the jitter spreads them. The sleep is injected,
so tests run the policy without waiting. Only what is safe to ask twice goes through it (a token
request, a read); a POST that may have created something never does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

T = TypeVar("T")


def pause(seconds: float) -> None:
    """The policy's default sleep; a test suite may replace it (as stamina's testing mode) to never wait."""
    time.sleep(seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to try again; `sleep` (default: this module's `pause`) is injectable."""

    attempts: int = 3
    initial: float = 0.5  # seconds before the second attempt, doubled each time, plus up to `jitter`
    maximum: float = 4.0
    jitter: float = 0.5
    sleep: Callable[[float], None] | None = None

    def call(self, fn: Callable[[], T], transient: Callable[[BaseException], bool]) -> T:
        """fn(), tried again while it raises an exception `transient` accepts; the last one is raised."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.attempts)),
            wait=tenacity.wait_exponential(multiplier=self.initial, max=self.maximum)
            + tenacity.wait_random(0, self.jitter),
            retry=tenacity.retry_if_exception(transient),
            sleep=self.sleep or (lambda seconds: pause(seconds)),  # looked up late: replaceable
            reraise=True,
        )
        return retrying(fn)


NO_RETRY = RetryPolicy(attempts=1)


def poll(
    fn: Callable[[], bool], *, pause: Callable[[], float], sleep: Callable[[float], None] = time.sleep
) -> None:
    """fn() until it returns True, sleeping pause() seconds between calls (fn itself decides when to give up)."""
    tenacity.Retrying(
        stop=tenacity.stop_never,
        wait=lambda _state: pause(),
        retry=tenacity.retry_if_result(lambda finished: not finished),
        sleep=sleep,
        reraise=True,
    )(fn)
