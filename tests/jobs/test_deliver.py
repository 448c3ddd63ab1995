"""The delivery retry policy: exponential backoff from the settings, plus a bounded jitter."""

from __future__ import annotations

from tenacity import RetryCallState, Retrying

from flux_pmi.config.settings import DeliveryPolicy
from flux_pmi.jobs.deliver import JITTER, retry_wait


def _wait_after(policy: DeliveryPolicy, attempt: int) -> float:
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempt
    return retry_wait(policy)(state)


def test_waits_double_up_to_the_cap_with_a_jitter_of_at_most_half_the_base():
    policy = DeliveryPolicy(backoff_seconds=1.0, backoff_max_seconds=5.0)
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        waits = [_wait_after(policy, attempt) for _ in range(50)]
        assert all(base <= w <= base + JITTER * policy.backoff_seconds for w in waits), (attempt, waits)
    # The jitter is random: parallel départements failing together do not retry in lockstep.
    assert len({_wait_after(policy, 1) for _ in range(20)}) > 1
