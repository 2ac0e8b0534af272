"""A workaround that keeps a worker alive when the Redis broker goes away (Celery/kombu 5.7).

On a lost connection, Celery 5.7's consumer first *collects* the connection (kombu drops
the transport's reference to its Connection) and then *closes* it; closing the channel
tries to put its unacknowledged messages back through a new Redis client, whose
parameters come from that dropped reference: `AttributeError: 'NoneType' object has no
attribute 'hostname'`, which the consumer does not catch, and the worker process exits
("Unrecoverable error"). It happens whenever the worker held an unacknowledged message
(a running or prefetched task) at the moment of the loss, so the scan/maintenance worker
met it and the inference worker, between chunks, often did not.

The restore cannot work anyway (the broker is unreachable): the messages stay in Redis's
unacked set, restored after the visibility timeout, and the scheduler re-sends their work
as soon as it sees the outage (service.broker_watch). Skipping it is what kombu's own
`ignore_errors` meant to do.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as redis_transport

_original = redis_transport.QoS.restore_unacked_once


def _restore_unless_collected(self: Any, stderr: Any = None) -> Any:
    if getattr(self.channel.connection, "client", None) is None:
        return None  # the connection was collected after a loss: nothing can be restored
    return _original(self, stderr)


def install() -> None:
    """Patch kombu's Redis QoS once (idempotent)."""
    redis_transport.QoS.restore_unacked_once = _restore_unless_collected  # type: ignore[method-assign]
