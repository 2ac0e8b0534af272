"""The audit log: who did which admin action (activation, rollback, promotion, users, keys)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import newest_first
from service.models import AuditEntry

# Callers who are not a user or a key; no username may equal one (service.users).
CLI_ACTOR = "cli"
SYSTEM_ACTOR = "system"
RETRAINING_ACTOR = "retraining"  # the retraining check's automatic promotion
NOT_USERS = frozenset({CLI_ACTOR, SYSTEM_ACTOR, RETRAINING_ACTOR})


def key_principal(key_id: int) -> str:
    """The principal of an API key; usernames cannot contain ':', so it never equals one."""
    return f"key:{key_id}"


def record(
    session: Session, actor: str, action: str, target: str = "", **details: Any
) -> AuditEntry:
    """Append one entry; the caller's transaction commits it with the action it describes."""
    entry = AuditEntry(actor=actor or SYSTEM_ACTOR, action=action, target=target, details=details)
    session.add(entry)
    return entry


def list_entries(session: Session, limit: int, offset: int) -> tuple[list[AuditEntry], int]:
    """A page of entries, newest first, and the total count."""
    return newest_first(session, select(AuditEntry), AuditEntry.id, limit, offset)


def entry_to_dict(entry: AuditEntry) -> dict[str, Any]:
    """The public JSON shape of an entry."""
    return {
        "id": entry.id,
        "created_at": entry.created_at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "details": entry.details,
    }
