"""Idempotency keys of job creation: a retried `POST /jobs` gets the job it already made."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import jobs
from service.errors import BadInput, InvalidState, KeyReused
from service.models import IdempotencyKey, ScanJob, utcnow
from service.settings import Settings

KEY_LIFETIME = timedelta(hours=24)
MAX_KEY_LENGTH = 255


def checked_key(raw: str | None) -> str | None:
    """The header's key (None if absent); BadInput unless 1-255 visible ASCII characters."""
    if raw is None:
        return None
    key = raw.strip()
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(33 <= ord(c) <= 126 for c in key):
        raise BadInput(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} visible ASCII characters "
            "(a UUID is a good choice)"
        )
    return key


def fingerprint(body: Mapping[str, Any]) -> str:
    """sha256 of a parsed request body, the same whatever the order of its fields."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_job_once(
    session: Session,
    settings: Settings,
    principal: str,
    key: str,
    body: Mapping[str, Any],
) -> tuple[ScanJob, bool]:
    """The job made by this principal's earlier request with `key` (within 24 h) and False,
    else a new job (jobs.create_job with `body`) and True.

    KeyReused if the earlier request had another body. The key is reserved before the job
    is made: a concurrent request with the same key waits on the unique index (PostgreSQL;
    SQLite serialises writers) and then finds the committed job. A request that fails
    (bad folder, no model) reserves nothing, so its retry is judged afresh.
    """
    digest = fingerprint(body)
    earlier = _earlier_job(session, principal, key, digest)
    if earlier is not None:
        return earlier, False
    reserved = _reserve(session, principal, key, digest)
    if reserved is None:  # a concurrent request with this key committed first
        earlier = _earlier_job(session, principal, key, digest)
        if earlier is None:
            raise InvalidState("a request with this Idempotency-Key is in progress; retry it")
        return earlier, False
    options = {name: value for name, value in body.items() if name != "folder"}
    job = jobs.create_job(session, settings, body["folder"], created_by=principal, **options)
    reserved.job_id = job.id
    session.flush()
    return job, True


def _earlier_job(session: Session, principal: str, key: str, digest: str) -> ScanJob | None:
    """The live key's job, None if the key is unknown or expired; KeyReused on another body."""
    row = session.execute(
        select(IdempotencyKey.fingerprint, IdempotencyKey.job_id).where(
            IdempotencyKey.principal == principal,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at > utcnow() - KEY_LIFETIME,
            IdempotencyKey.job_id.is_not(None),
        )
    ).one_or_none()
    if row is None:
        return None
    if row.fingerprint != digest:
        raise KeyReused(
            "this Idempotency-Key was used for a different request in the last 24 hours; "
            "use a new key for a new job",
            details={"job_id": row.job_id},
        )
    return session.get(ScanJob, row.job_id)


def _reserve(session: Session, principal: str, key: str, digest: str) -> IdempotencyKey | None:
    """Insert the key (expired keys are dropped first); None if another request holds it."""
    session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at <= utcnow() - KEY_LIFETIME)
    )
    reserved = IdempotencyKey(principal=principal, key=key, fingerprint=digest)
    try:
        with session.begin_nested():
            session.add(reserved)
    except IntegrityError:
        return None
    return reserved
