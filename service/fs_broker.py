"""The embedded default's broker: kombu's filesystem transport with atomic message files.

kombu writes a message by creating its final file and then writing into it. A consumer
polling the folder can move and read that file in between: it reads nothing, the JSON
decode fails, the worker stops ("Unrecoverable error: JSONDecodeError") and the message
is lost. Here a message is written under a name no consumer picks up and renamed into
place once complete (a rename within one folder is atomic), and a file that still does not
parse (a disk that filled up, a hand edit) is set aside with a log line instead of
stopping the worker. `install()` makes `filesystem://` URLs use this transport.

kombu polls the folder every `polling_interval`, so a message waits half an interval on
average before a worker sees it, at every hop of a job (the scan, each chunk). On Linux a
consumer here waits on an inotify watch of the folder instead and looks as soon as a
message lands, and lists the folder unprompted only every WATCHED_POLL_INTERVAL (a file
written from another machine on a shared folder raises no event).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from queue import Empty
from time import monotonic
from typing import Any

try:
    from inotify_simple import INotify
    from inotify_simple import flags as inotify_flags
except ImportError:  # not Linux: kombu's polling
    INotify = None

from kombu import transport as kombu_transport
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

STAGING_PREFIX = "."  # kombu matches `<time>_<uuid>.<queue>.msg`; a leading dot never matches
UNREADABLE_FOLDER = "unreadable"
WATCHED_POLL_INTERVAL = 1.0  # seconds between unprompted looks when the folder is watched


class Channel(filesystem.Channel):
    # kombu names the message `message` in the base class and `payload` in this one.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Zero-padded so that the name order the consumer reads in is the time order.
        name = f"{round(monotonic() * 1000):015d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        staging = os.path.join(self.data_folder_out, f"{STAGING_PREFIX}{name}.part")
        try:
            with open(staging, "wb") as fh:
                fh.write(dumps(payload).encode())
            os.replace(staging, final)
        except OSError as exc:
            raise ChannelError(f"cannot add message {name!r} to {self.data_folder_out}") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in), key=_arrival):
            if name.startswith(STAGING_PREFIX) or name.partition(".")[2] != wanted:
                continue
            # Taking the file by moving it out: only one consumer's move can succeed.
            taken = os.path.join(self.processed_folder, name)
            try:
                os.makedirs(self.processed_folder, exist_ok=True)
                shutil.move(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another consumer took it first
            try:
                with open(taken, "rb") as fh:
                    payload = fh.read()
            except OSError as exc:
                raise ChannelError(f"cannot read message {taken!r}") from exc
            try:
                message = loads(payload.decode())
            except (UnicodeDecodeError, ValueError) as exc:
                self._set_aside(taken, exc)
                continue
            if not self.store_processed:
                os.remove(taken)
            return message
        raise Empty()

    def _set_aside(self, path: str, exc: Exception) -> None:
        folder = os.path.join(os.path.dirname(path), UNREADABLE_FOLDER)
        os.makedirs(folder, exist_ok=True)
        shutil.move(path, os.path.join(folder, os.path.basename(path)))
        log.error("broker message %s is unreadable (%s): set aside in %s", path, exc, folder)


def _arrival(name: str) -> tuple[int, str]:
    """Order by the millisecond prefix as a number: kombu's own writer does not pad it."""
    stamp = name.partition("_")[0]
    return (int(stamp) if stamp.isdigit() else -1, name)


class Transport(filesystem.Transport):
    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._watch: Any = None  # the folder's inotify watch, made by the first wait

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        """Deliver one message, waiting on the folder's watch between looks (kombu sleeps)."""
        watch = self._folder_watch()
        if watch is None:
            super().drain_events(connection, timeout)
            return
        began, cycle = monotonic(), self.cycle
        assert cycle is not None  # made in __init__
        while True:
            try:
                # The watch exists before this look, so a message written after it still
                # wakes the wait below.
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                wait = max(self.polling_interval or 0.0, WATCHED_POLL_INTERVAL)
                if timeout is not None:
                    left = timeout - (monotonic() - began)
                    if left <= 0:
                        raise TimeoutError() from None  # what kombu raises (socket.timeout)
                    wait = min(wait, left)
                watch.read(timeout=max(1, round(wait * 1000)))  # returns early on an event

    def _folder_watch(self) -> Any:
        if self._watch is None and INotify is not None:
            options = self.client.transport_options if self.client else {}
            folder = options.get("data_folder_in", "data_in")
            try:
                watch = INotify()
                watch.add_watch(folder, inotify_flags.MOVED_TO | inotify_flags.CLOSE_WRITE)
            except OSError as exc:  # no such folder yet, or the system's watch limit
                log.warning("cannot watch broker folder %s (%s): polling it", folder, exc)
                self._watch = False
                return None
            self._watch = watch
        return self._watch or None

    def close_connection(self, connection: Any) -> None:
        if self._watch:
            self._watch.close()
        self._watch = None
        super().close_connection(connection)


def install() -> None:
    """Make every `filesystem://` connection of this process use this transport."""
    kombu_transport.TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
