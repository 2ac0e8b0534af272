"""Which task queues a live worker consumes, asked over the broker (Celery remote control)."""

from __future__ import annotations

from collections.abc import Sequence

from kombu.exceptions import OperationalError

from service.settings import Settings
from service.tasks_client import celery_client


def idle_queues(
    settings: Settings, queues: Sequence[str], timeout: float = 1.0
) -> list[str] | None:
    """The queues among `queues` that no live worker consumes; None if the broker is down.

    Workers get `timeout` seconds to answer. A worker's main process answers even while
    its pool is busy, so a long job does not make a queue look idle.
    """
    try:
        replies = celery_client(settings).control.inspect(timeout=timeout).active_queues()
    except OperationalError:  # nobody can be asked; the work waits for the broker anyway
        return None
    consumed = {queue["name"] for per_worker in (replies or {}).values() for queue in per_worker}
    return [name for name in queues if name not in consumed]
