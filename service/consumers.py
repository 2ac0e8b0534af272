"""Which task queues a live worker consumes, asked over the broker (Celery remote control)."""

from __future__ import annotations

from collections.abc import Sequence

from service.settings import Settings
from service.tasks_client import celery_client


def idle_queues(settings: Settings, queues: Sequence[str], timeout: float = 1.0) -> list[str]:
    """The queues among `queues` that no live worker consumes; workers get `timeout` s to answer.

    A worker's main process answers even while its pool is busy, so a long job does not
    make a queue look idle.
    """
    replies = celery_client(settings).control.inspect(timeout=timeout).active_queues() or {}
    consumed = {queue["name"] for per_worker in replies.values() for queue in per_worker or []}
    return [name for name in queues if name not in consumed]
