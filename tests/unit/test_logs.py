"""JSON log lines carry the job and chunk of the work they describe."""

from __future__ import annotations

import io
import json
import logging

from service.logs import JsonFormatter, configure_logging, work_context
from service.settings import Settings


def _logger(stream: io.StringIO) -> logging.Logger:
    logger = logging.getLogger(f"herpscore.test.{id(stream)}")
    logger.propagate = False
    logger.handlers = [logging.StreamHandler(stream)]
    logger.setLevel(logging.INFO)
    return logger


def test_json_lines_carry_job_and_chunk_ids() -> None:
    stream = io.StringIO()
    logger = _logger(stream)
    configure_logging(Settings(log_json=True), logger)
    with work_context(job_id=7, chunk_id=42):
        logger.info("chunk %s: %d scored", 42, 250)
    logger.warning("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "chunk 42: 250 scored" and first["level"] == "INFO"
    assert (first["job_id"], first["chunk_id"]) == (7, 42)
    assert "job_id" not in second and second["level"] == "WARNING"


def test_text_logs_stay_text_by_default() -> None:
    stream = io.StringIO()
    logger = _logger(stream)
    configure_logging(Settings(), logger)
    logger.info("plain")
    assert stream.getvalue() == "plain\n"
    assert not isinstance(logger.handlers[0].formatter, JsonFormatter)


def test_exceptions_are_one_line_of_json() -> None:
    stream = io.StringIO()
    logger = _logger(stream)
    configure_logging(Settings(log_json=True), logger)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exc"]
