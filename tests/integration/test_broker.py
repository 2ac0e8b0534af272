"""enqueue() on a real Redis broker: each stack's keys under its own prefix."""

from __future__ import annotations

import json

import pytest
import redis

from service.settings import Settings
from service.tasks_client import EXPORT_TASK, enqueue

pytestmark = pytest.mark.redis


def test_messages_go_under_the_stacks_key_prefix(redis_broker: dict[str, str]) -> None:
    settings = Settings(database_url="sqlite://", **redis_broker)
    assert enqueue(settings, EXPORT_TASK, [41, 42]).queued
    client = redis.Redis.from_url(redis_broker["broker_url"])
    try:
        waiting = client.lrange(f"{redis_broker['broker_key_prefix']}export", 0, -1)
        sent = [json.loads(raw)["headers"] for raw in waiting]
        assert sorted((h["task"], h["argsrepr"]) for h in sent) == [
            (EXPORT_TASK, "[41]"),
            (EXPORT_TASK, "[42]"),
        ]
    finally:
        client.close()
