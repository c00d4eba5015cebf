"""Retry with exponential backoff, only for :class:`storage.errors.TransientError`."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from storage.errors import TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry transient failures (429, 5xx, network)."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based); honours Retry-After up to max_delay."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff = self.base_delay * (2 ** (attempt - 1))
        return min(backoff * (0.5 + random.random() / 2), self.max_delay)


DEFAULT_POLICY = RetryPolicy()


class RetryableError(TransientError):
    """A transient failure carrying an optional server-suggested wait (Retry-After)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def call_with_retry(fn: Callable[[], T], what: str, policy: RetryPolicy = DEFAULT_POLICY) -> T:
    """Call ``fn``; on TransientError sleep and retry up to ``policy.attempts`` times, then re-raise.

    Any other exception (bad input, 4xx) propagates at once.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except TransientError as err:
            if attempt == policy.attempts:
                raise TransientError(f"{what}: gave up after {attempt} attempts: {err}") from err
            wait = policy.delay(attempt, getattr(err, "retry_after", None))
            log.warning("%s: transient failure (%s), retry %d/%d in %.2fs", what, err, attempt, policy.attempts - 1, wait)
            time.sleep(wait)
    raise TransientError(f"{what}: no attempts made")  # attempts < 1
