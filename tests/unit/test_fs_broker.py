"""The embedded broker's message files: written atomically, unreadable ones set aside."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Queue
from kombu.transport import filesystem

from service import fs_broker


def _options(root: Path) -> dict[str, Any]:
    return {
        "data_folder_in": str(root / "in"),
        "data_folder_out": str(root / "in"),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
    }


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    for name in ("in", "processed", "control"):
        (tmp_path / name).mkdir()
    return tmp_path


def _channel(transport: type, root: Path) -> Any:
    connection = Connection("filesystem://", transport=transport, transport_options=_options(root))
    return connection, connection.default_channel


def _race(transport: type, root: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A consumer polls the folder at the moment the producer's file is created but not
    yet written; returns what that poll got (or the error it raised)."""
    _, producer = _channel(transport, root)
    _, consumer = _channel(transport, root)
    seen: list[Any] = []
    real_open = open

    def open_then_poll(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).startswith(str(root / "in")):
            try:
                seen.append(consumer._get("scan"))
            except Empty:
                seen.append("empty")
            except Exception as exc:  # noqa: BLE001 - what kombu's own channel raises
                seen.append(exc)
        return fh

    monkeypatch.setattr("builtins.open", open_then_poll)
    producer._put("scan", {"body": "hello"})
    monkeypatch.undo()
    return seen


def test_kombus_own_channel_loses_a_message_to_a_concurrent_poll(
    folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The failure this module exists for (if kombu fixes it, this test says so).
    (seen,) = _race(filesystem.Transport, folders, monkeypatch)
    assert isinstance(seen, ValueError)  # JSONDecodeError: the worker would stop


def test_a_message_is_never_visible_before_it_is_complete(
    folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _race(fs_broker.Transport, folders, monkeypatch) == ["empty"]
    _, consumer = _channel(fs_broker.Transport, folders)
    assert consumer._get("scan") == {"body": "hello"}
    with pytest.raises(Empty):
        consumer._get("scan")
    assert not [n for n in os.listdir(folders / "in") if not n.startswith(".")]


def test_an_unreadable_message_is_set_aside_and_the_next_one_served(folders: Path) -> None:
    _, channel = _channel(fs_broker.Transport, folders)
    (folders / "in" / "1_bad.scan.msg").write_bytes(b"\x00{not json")
    channel._put("scan", {"body": "next"})

    assert channel._get("scan") == {"body": "next"}
    assert (folders / "processed" / "unreadable" / "1_bad.scan.msg").is_file()
    with pytest.raises(Empty):
        channel._get("scan")


def test_messages_are_served_in_the_order_they_were_written(folders: Path) -> None:
    # Unpadded names from kombu's own writer ("9_..." before "10_...") and padded ones mix.
    _, channel = _channel(fs_broker.Transport, folders)
    (folders / "in" / "10_b.scan.msg").write_text('{"body": "second"}')
    (folders / "in" / "9_a.scan.msg").write_text('{"body": "first"}')
    channel._put("scan", {"body": "third"})

    assert [channel._get("scan")["body"] for _ in range(3)] == ["first", "second", "third"]


def test_install_routes_filesystem_urls_to_this_transport() -> None:
    fs_broker.install()
    assert Connection("filesystem://").transport_cls == "filesystem"
    assert isinstance(Connection("filesystem://").transport, fs_broker.Transport)


@pytest.mark.skipif(fs_broker.INotify is None, reason="inotify is Linux's")
def test_a_waiting_consumer_wakes_when_a_message_lands_not_at_its_next_poll(
    folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Each test has its own queue name: kombu keeps bindings per process, not per folder.)
    # Every poll far longer than the join below: only the folder's watch can deliver in time.
    monkeypatch.setattr(fs_broker, "WATCHED_POLL_INTERVAL", 600.0)
    options = {**_options(folders), "polling_interval": 600}
    queue = Queue("wake", Exchange("wake"), routing_key="wake")
    got: list[Any] = []
    with (
        Connection("filesystem://", transport=fs_broker.Transport, transport_options=options) as rx,
        Connection("filesystem://", transport=fs_broker.Transport, transport_options=options) as tx,
        Consumer(rx, [queue], callbacks=[lambda body, message: got.append(body)], accept=["json"]),
    ):
        waiter = threading.Thread(target=rx.drain_events, kwargs={"timeout": 900}, daemon=True)
        waiter.start()
        time.sleep(0.2)  # let the consumer find the folder empty and start waiting
        tx.Producer().publish({"job": 7}, exchange="wake", routing_key="wake", declare=[queue])
        waiter.join(timeout=30)

        assert not waiter.is_alive()
    assert got == [{"job": 7}]


def test_without_inotify_the_consumer_polls(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs_broker, "INotify", None)
    options = {**_options(folders), "polling_interval": 0.05}
    queue = Queue("poll", Exchange("poll"), routing_key="poll")
    got: list[Any] = []
    with (
        Connection("filesystem://", transport=fs_broker.Transport, transport_options=options) as rx,
        Consumer(rx, [queue], callbacks=[lambda body, message: got.append(body)], accept=["json"]),
    ):
        rx.Producer().publish({"job": 8}, exchange="poll", routing_key="poll", declare=[queue])
        rx.drain_events(timeout=30)
        with pytest.raises(TimeoutError):
            rx.drain_events(timeout=0.2)
    assert got == [{"job": 8}]
    assert rx.transport._watch is None
