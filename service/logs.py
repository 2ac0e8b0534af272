"""Log lines as text or JSON (HERPSCORE_LOG_JSON), each tagged with the job and chunk that
the work belongs to."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from service.settings import Settings

_job_id: ContextVar[int | None] = ContextVar("herpscore_job_id", default=None)
_chunk_id: ContextVar[int | None] = ContextVar("herpscore_chunk_id", default=None)


@contextmanager
def work_context(job_id: int | None = None, chunk_id: int | None = None) -> Iterator[None]:
    """Every log line inside the block carries these ids."""
    tokens = [(_job_id, _job_id.set(job_id)), (_chunk_id, _chunk_id.set(chunk_id))]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def tag_job(job_id: int) -> None:
    """Tag the rest of a chunk's work_context with its job, once known (the task is sent
    the chunk id only). Outside one it does nothing: no block's end would take it back."""
    if _chunk_id.get() is not None:
        _job_id.set(job_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job_id, chunk_id[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("job_id", _job_id), ("chunk_id", _chunk_id)):
            value = var.get()
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def use_json(logger: logging.Logger | None = None) -> None:
    """Give every handler of `logger` (default: the root logger) the JSON formatter."""
    logger = logger or logging.getLogger()
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def configure_logging(settings: Settings, logger: logging.Logger | None = None) -> None:
    """JSON lines when the setting asks for them; otherwise the handlers are left alone."""
    if settings.log_json:
        use_json(logger)
