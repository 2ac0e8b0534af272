"""Has the broker been reset or unreachable since the scheduler's last check?

Messages die with a broker outage: Redis restarted without its data loses the queues and
the unacked records, and a worker that reconnects drops the messages it had prefetched
(they come back only after the visibility timeout). The scheduler's own check travels
through the broker every `stalled_check_seconds`, so a gap between two checks, or a
missing mark, means an outage: the scheduler then re-sends every queued item at once.
"""

from __future__ import annotations

import logging
import time

from service.settings import Settings
from service.tasks_client import celery_client

log = logging.getLogger(__name__)
MARK_KEY = "herpscore:scheduler-check"
GAP_CHECKS = 2  # more than this many check intervals between checks: an outage


def broker_was_reset(settings: Settings, now: float | None = None) -> bool:
    """Record this check in the broker; True when the mark was missing (a reset broker or the
    first check) or older than GAP_CHECKS check intervals (the broker, the scheduler or its
    worker was away). Always False on the embedded broker, whose folder loses nothing."""
    if settings.is_embedded_broker:
        return False
    now = time.time() if now is None else now
    with celery_client(settings).connection_for_write() as conn:
        client = getattr(conn.default_channel, "client", None)
        if client is None or not hasattr(client, "set"):  # not Redis: leases only
            return False
        previous = client.set(MARK_KEY, repr(now), get=True)
    if previous is None:
        log.warning("no scheduler mark in the broker: it was reset (or this is its first check)")
        return True
    gap = now - float(previous)
    if gap > GAP_CHECKS * settings.stalled_check_seconds:
        log.warning("%.0f s since the scheduler's last check: the broker was away", gap)
        return True
    return False
