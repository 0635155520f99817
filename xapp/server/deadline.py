"""The effective deadline of a call, as an absolute ``time.monotonic()`` instant.

It is the earliest of the caller's gRPC deadline, the request's ``deadline_ms`` (0: the server default) and
the configured maximum, less a safety margin kept back for serialising the reply and the trip back — so the
reply reaches the caller before its own deadline fires.
"""

from __future__ import annotations

import time
from typing import Protocol

from xapp.config import Settings


class HasTimeRemaining(Protocol):
    def time_remaining(self) -> float | None: ...


def effective_deadline(
    settings: Settings,
    deadline_ms: int = 0,
    context: HasTimeRemaining | None = None,
    *,
    now: float | None = None,
) -> float:
    """Absolute monotonic instant by which the pipeline must have produced the reply.

    ``deadline_ms`` must already be validated (>= 0). The result may lie in the past when the caller's
    deadline is shorter than the margin; the pipeline then answers on the template path at once.
    """
    start = time.monotonic() if now is None else now
    budget_s = min(deadline_ms or settings.deadline_ms, settings.max_deadline_ms) / 1000.0
    if context is not None:
        remaining = context.time_remaining()
        if remaining is not None:  # None: the caller set no deadline
            budget_s = min(budget_s, max(remaining, 0.0))
    return start + budget_s - settings.safety_margin_ms / 1000.0


def budget_ms(deadline: float, *, now: float | None = None) -> float:
    """Milliseconds left until ``deadline`` (negative when it has passed)."""
    return (deadline - (time.monotonic() if now is None else now)) * 1000.0
