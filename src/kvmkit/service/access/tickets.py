"""Console tickets: short-lived (60 s), single-use secrets that open one console of one VM.

A browser cannot put an ``Authorization`` header on a WebSocket, and a long-lived token in the URL ends
up in access logs and browser history. So a caller who may use a VM's console asks for a ticket
(``POST /api/v1/vms/{name}/console``) with its normal credentials and opens the WebSocket with
``?ticket=``. Only the ticket's sha256 is stored, with the user, the token it was asked with, the VM's name
AND UUID, the console kind (``serial`` or ``vnc``) and whether it is view-only. :func:`take` marks it used
in the same UPDATE that checks it is unused and unexpired, so with several servers on one database a
ticket still opens exactly one console.

Interface: :func:`check_may_open` (who may have which console: operators any, viewers the graphical one
view-only); :func:`issue` -> (secret, expires_at); :func:`take` -> :class:`Ticket` or Unauthorized;
:func:`access_problem` -> why a console opened by a user/token must close now (None while it may stay).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from kvmkit.service.access.auth import Forbidden, Principal, Unauthorized, principal_for, sha256
from kvmkit.store.models import ConsoleTicket, Token, User

TICKET_PREFIX = "kvt_"
TICKET_SECONDS = 60
KINDS = ("serial", "vnc")


@dataclass(frozen=True)
class Ticket:
    user_id: int
    token_id: int | None
    vm_name: str
    vm_uuid: str
    kind: str
    view_only: bool


def check_may_open(p: Principal, vm_name: str, kind: str, view_only: bool) -> None:
    """Forbidden unless ``p`` may have that console of a VM it can see: operators any console, viewers only
    the graphical one, view-only (they may watch, never type)."""
    if p.at_least("operator") or (kind == "vnc" and view_only and p.at_least("viewer")):
        return
    raise Forbidden(f"user {p.name} is a {p.role}: viewers may only watch the graphical console of VM {vm_name}",
                    hint='ask for {"kind": "vnc", "view_only": true}, or ask an admin for the operator role')


def issue(s: Session, p: Principal, vm_name: str, vm_uuid: str, kind: str = "serial",
          view_only: bool = False) -> tuple[str, datetime]:
    """A new ticket for ``p`` on that VM's console of ``kind``; the secret is returned only now."""
    if kind not in KINDS:
        raise ValueError(f"unknown console kind {kind!r}")
    now = datetime.now(UTC)
    s.execute(delete(ConsoleTicket).where(ConsoleTicket.expires_at < now - timedelta(hours=1)))  # old ones
    secret = TICKET_PREFIX + secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=TICKET_SECONDS)
    s.add(ConsoleTicket(ticket_hash=sha256(secret), user_id=p.user_id, token_id=p.token_id, vm_name=vm_name,
                        vm_uuid=vm_uuid.lower(), kind=kind, view_only=view_only, created_at=now, expires_at=expires))
    s.flush()
    return secret, expires


def take(s: Session, secret: str, vm_name: str, kind: str) -> Ticket:
    """Use a ticket, once: Unauthorized when it is unknown, used, expired, or for another VM or kind."""
    refused = Unauthorized("invalid, used or expired console ticket",
                           hint="ask for a new one: POST /api/v1/vms/NAME/console (tickets work once, for 60 s)")
    if not secret.startswith(TICKET_PREFIX) or len(secret) > 100:
        raise refused
    digest = sha256(secret)
    now = datetime.now(UTC)
    taken = s.execute(update(ConsoleTicket)
                      .where(ConsoleTicket.ticket_hash == digest, ConsoleTicket.used_at.is_(None),
                             ConsoleTicket.expires_at > now)
                      .values(used_at=now))
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise refused
    row = s.scalar(select(ConsoleTicket).where(ConsoleTicket.ticket_hash == digest))
    if row is None or row.vm_name != vm_name or row.kind != kind:
        raise refused
    return Ticket(user_id=row.user_id, token_id=row.token_id, vm_name=row.vm_name, vm_uuid=row.vm_uuid,
                  kind=row.kind, view_only=row.view_only)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def access_problem(s: Session, user_id: int, token_id: int | None, vm_name: str, vm_uuid: str,
                   need: str = "operator") -> tuple[Principal | None, str | None]:
    """(the user's principal now, None) while the user may still use that VM's console; (None, why) once
    the token it came with is revoked or expired, the user is disabled, deleted or demoted below ``need``,
    or its grant of the VM (bound to ``vm_uuid``) is gone."""
    user = s.get(User, user_id)
    if user is None:
        return None, "the user was deleted"
    if user.disabled:
        return None, f"user {user.name} was disabled"
    tok = s.get(Token, token_id) if token_id is not None else None
    if token_id is not None:
        if tok is None or tok.revoked_at is not None:
            return None, "the token or session was revoked"
        if tok.expires_at is not None and _aware(tok.expires_at) < datetime.now(UTC):
            return None, "the session expired"
    p = principal_for(s, user, tok)
    if not p.at_least(need):
        return None, f"user {user.name} is now {user.role}"
    if not p.may_see_vm(vm_name, vm_uuid):
        return None, f"VM {vm_name} is no longer delegated to {user.name}"
    return p, None
