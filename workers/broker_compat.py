"""A workaround that keeps a worker alive when the Redis broker goes away (Celery/kombu 5.7).

On a lost connection, Celery 5.7's consumer *collects* the connection (kombu drops the
transport's reference to its Connection, and the channel's to the transport) and then
*closes* it. Two things then reach Redis through that dropped reference and raise
AttributeError ('NoneType' object has no attribute 'hostname' / 'client'), which Celery
does not catch, and the worker process exits ("Unrecoverable error"):

- closing the channel puts its unacknowledged messages back (whenever the worker held a
  running or prefetched task at the moment of the loss);
- a task that started before the loss and finishes after the reconnect acknowledges its
  message on the old, closed channel (a scan that rode out the outage).

Neither can work (that channel's connection is gone): the messages stay in Redis's unacked
set and come back after the visibility timeout, the scheduler re-sends their work as soon
as it sees the outage (service.broker_watch), and every task is idempotent. Skipping them
is what kombu's own `ignore_errors` around the close meant to do.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as redis_transport

_QoS = redis_transport.QoS
_restore_unacked_once = _QoS.restore_unacked_once
_ack = _QoS.ack
_reject = _QoS.reject


def _released(qos: Any) -> bool:
    """Has this channel's connection been collected after a loss?"""
    return getattr(qos.channel.connection, "client", None) is None


def _restore_unacked_once_safely(self: Any, stderr: Any = None) -> Any:
    return None if _released(self) else _restore_unacked_once(self, stderr)


def _ack_safely(self: Any, delivery_tag: Any) -> None:
    if not _released(self):
        _ack(self, delivery_tag)


def _reject_safely(self: Any, delivery_tag: Any, requeue: bool = False) -> None:
    if not _released(self):
        _reject(self, delivery_tag, requeue=requeue)


def install() -> None:
    """Patch kombu's Redis QoS (idempotent: the originals are kept at import)."""
    _QoS.restore_unacked_once = _restore_unacked_once_safely  # type: ignore[method-assign]
    _QoS.ack = _ack_safely  # type: ignore[method-assign]
    _QoS.reject = _reject_safely  # type: ignore[method-assign]
