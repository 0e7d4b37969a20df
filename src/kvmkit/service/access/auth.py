"""Users, groups, VM grants, API tokens and login with rate limiting.

Passwords are hashed with argon2id (argon2-cffi). Tokens are random secrets shown once; the database keeps
only their sha256, so a leaked database does not leak usable tokens. Tokens are revocable.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from kvmkit.errors import Conflict, InvalidInput, KvmkitError, NotFound
from kvmkit.store.models import Group, GroupMember, Token, User, VMGrant

ROLES = ("viewer", "operator", "admin")
SCOPES = ("all", "granted")
TOKEN_PREFIX = "kvk_"
SESSION_HOURS = 12


class Unauthorized(KvmkitError):
    code = "unauthorized"
    http_status = 401


class Forbidden(KvmkitError):
    code = "forbidden"
    http_status = 403


class TooManyAttempts(KvmkitError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, hint: str | None = None, retry_after: int = 60) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


def _hasher():  # -> argon2.PasswordHasher
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise InvalidInput("password is shorter than 8 characters", hint="choose a password of 8 or more characters")
    if any(c < " " or "\ud800" <= c <= "\udfff" for c in password):
        raise InvalidInput("password holds control characters or is not valid Unicode",
                           hint="choose a password of printable characters")
    return _hasher().hash(password)


_dummy_hash: str | None = None
_dummy_lock = threading.Lock()


def dummy_hash() -> str:
    """An argon2id hash of a random secret nobody knows, made once per process: verified in place of a
    user's hash when the user does not exist, is disabled or has no password, so that a login costs the
    same argon2 verification whether the name is known or not (no user enumeration by timing)."""
    global _dummy_hash
    with _dummy_lock:
        if _dummy_hash is None:
            _dummy_hash = _hasher().hash(secrets.token_urlsafe(24))
        return _dummy_hash


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``. Without a stored hash it still runs one argon2 verification
    (against :func:`dummy_hash`) and answers False: both paths cost the same."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        if not stored:
            _hasher().verify(dummy_hash(), password)
            return False
        return _hasher().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_name(name: str, what: str = "name") -> str:
    from kvmkit.spec.common import validate_name as v

    return v(name, what)


@dataclass
class Principal:
    """Who is making a request: the user, its role, and (for vm_scope 'granted') the VMs it may see.

    Grants are bound to the VM's UUID: ``bound`` maps each granted name to the UUIDs its grants were made
    for (None in the set: an old grant bound by name alone). ``uuid_of`` (set by the API, which has the
    libvirt connection) tells the current UUID of a VM name, or None when no such VM exists."""

    name: str
    role: str
    user_id: int
    granted: frozenset[str] | None = None  # None = every VM
    token_id: int | None = None
    via_session: bool = False
    csrf_hash: str | None = field(default=None, repr=False)
    bound: dict[str, frozenset[str | None]] = field(default_factory=dict, repr=False)
    uuid_of: Callable[[str], str | None] | None = field(default=None, repr=False, compare=False)

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def may_see_vm(self, name: str, uuid: str | None = None) -> bool:
        """Whether the VM ``name`` (with ``uuid`` when the caller knows it) is within this caller's grants: a
        grant made for another VM of the same name (deleted and made again) does not count."""
        if self.granted is None:
            return True
        if name not in self.granted:
            return False
        uuids = self.bound.get(name, frozenset({None}))
        if None in uuids:
            return True
        if uuid is None and self.uuid_of is not None:
            uuid = self.uuid_of(name)
        return uuid is not None and uuid.lower() in uuids


def user_dict(u: User) -> dict[str, Any]:
    return {"name": u.name, "role": u.role, "vm_scope": u.vm_scope, "disabled": u.disabled,
            "created_at": _iso(u.created_at)}


def get_user(s: Session, name: str) -> User:
    u = s.scalar(select(User).where(User.name == name))
    if u is None:
        raise NotFound(f"user '{name}' not found", hint="list users with GET /api/v1/users or `kvmkit user list`")
    return u


def add_user(s: Session, name: str, role: str, password: str | None = None, vm_scope: str = "all") -> User:
    validate_name(name, "user name")
    if role not in ROLES:
        raise InvalidInput(f"unknown role '{role}'", hint=f"use one of {', '.join(ROLES)}")
    if vm_scope not in SCOPES:
        raise InvalidInput(f"unknown vm_scope '{vm_scope}'", hint="use 'all' or 'granted'")
    if s.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"user '{name}' exists already",
                       hint="pick another name, or change that user (PATCH /api/v1/users/NAME)")
    u = User(name=name, role=role, vm_scope=vm_scope, password_hash=hash_password(password) if password else None)
    s.add(u)
    s.flush()
    return u


def grant_bindings(s: Session, user: User) -> dict[str, frozenset[str | None]] | None:
    """VM name -> the UUIDs it is granted for (None: bound by name only), or None for every VM."""
    if user.vm_scope == "all" or user.role == "admin":
        return None
    group_ids = select(GroupMember.group_id).where(GroupMember.user_id == user.id)
    rows = s.execute(select(VMGrant.vm_name, VMGrant.vm_uuid)
                     .where(or_(VMGrant.user_id == user.id, VMGrant.group_id.in_(group_ids))))
    out: dict[str, set[str | None]] = {}
    for name, uuid in rows:
        out.setdefault(name, set()).add(uuid.lower() if uuid else None)
    return {k: frozenset(v) for k, v in out.items()}


def granted_vms(s: Session, user: User) -> frozenset[str] | None:
    bindings = grant_bindings(s, user)
    return None if bindings is None else frozenset(bindings)


def principal_for(s: Session, user: User, token: Token | None = None) -> Principal:
    bindings = grant_bindings(s, user)
    return Principal(name=user.name, role=user.role, user_id=user.id,
                     granted=None if bindings is None else frozenset(bindings), bound=bindings or {},
                     token_id=token.id if token else None, via_session=bool(token and token.kind == "session"),
                     csrf_hash=token.csrf_hash if token else None)


def create_token(s: Session, user: User, name: str = "api", *, kind: str = "api",
                 hours: float | None = None) -> tuple[Token, str, str | None]:
    """Make a token; return (row, secret, csrf secret for sessions). The secret is shown only now."""
    validate_name(name, "token name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24) if kind == "session" else None
    expires = datetime.now(UTC) + timedelta(hours=hours) if hours else None
    tok = Token(user_id=user.id, name=name, kind=kind, token_hash=sha256(secret),
                csrf_hash=sha256(csrf) if csrf else None, expires_at=expires)
    s.add(tok)
    s.flush()
    return tok, secret, csrf


def token_dict(t: Token) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "kind": t.kind, "user": t.user.name if t.user else None,
            "created_at": _iso(t.created_at), "expires_at": _iso(t.expires_at),
            "revoked": t.revoked_at is not None}


def authenticate(s: Session, secret: str) -> Principal:
    """The principal for a bearer token or session secret; Unauthorized when unknown, revoked or expired."""
    tok = s.scalar(select(Token).where(Token.token_hash == sha256(secret)))
    now = datetime.now(UTC)
    if tok is None or tok.revoked_at is not None:
        raise Unauthorized("invalid or revoked token", hint="log in again or create a token: kvmkit token create USER")
    if tok.expires_at is not None and _aware(tok.expires_at) < now:
        raise Unauthorized("session expired", hint="log in again")
    if tok.user.disabled:
        raise Unauthorized(f"user '{tok.user.name}' is disabled", hint="ask an admin to enable the account")
    tok.last_used_at = now
    return principal_for(s, tok.user, tok)


def _iso(dt: datetime | None) -> str | None:
    return _aware(dt).isoformat() if dt else None


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def revoke_token(s: Session, token_id: int, by: Principal) -> Token:
    tok = s.get(Token, token_id)
    if tok is None or (tok.user_id != by.user_id and not by.at_least("admin")):
        raise NotFound(f"token {token_id} not found", hint="list your tokens with GET /api/v1/tokens")
    tok.revoked_at = tok.revoked_at or datetime.now(UTC)
    return tok


class RateLimiter:
    """At most ``limit`` failures per ``window`` seconds for one key. :func:`login` keeps three keys per
    attempt: the user name from that address (``limit``), the address whatever the name
    (``address_limit``: many names tried from one place), and the name whatever the address
    (``name_limit``: one account tried from many places)."""

    def __init__(self, limit: int = 5, window: float = 60.0, *, address_limit: int = 20,
                 name_limit: int = 30) -> None:
        self.limit, self.window = limit, window
        self.address_limit, self.name_limit = address_limit, name_limit
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    MAX_KEYS = 100_000

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key) or deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            self._fails.pop(key, None)
        return q

    def check(self, key: str, limit: int | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            q = self._prune(key, now)
            if len(q) >= (self.limit if limit is None else limit):
                wait = int(q[0] + self.window - now) + 1
                raise TooManyAttempts(f"too many failed logins; try again in {wait} s",
                                      hint="check the user name and password", retry_after=wait)

    def fail(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._fails) >= self.MAX_KEYS:  # many names or addresses: forget the ones past the window
                for old in [k for k, q in self._fails.items() if not q or q[-1] <= now - self.window]:
                    del self._fails[old]
            self._fails[key].append(now)

    def reset(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


def login(s: Session, limiter: RateLimiter, name: str, password: str, client: str,
          *, session: bool = True) -> tuple[User, str, str | None]:
    """Check the password; return (user, secret, csrf). Failures count toward the rate limit."""
    keys = {f"name|{name}|{client}": limiter.limit, f"addr|{client}": limiter.address_limit,
            f"user|{name}": limiter.name_limit}
    for key, limit in keys.items():
        limiter.check(key, limit)
    user = s.scalar(select(User).where(User.name == name))
    # verify_password runs argon2 also without a hash; a missing or disabled user costs the same
    ok = verify_password(user.password_hash if user is not None else None, password)
    if user is None or user.disabled or not ok:
        for key in keys:
            limiter.fail(key)
        raise Unauthorized("wrong user name or password", hint="check both; after 5 failures in a minute, wait")
    limiter.reset(f"name|{name}|{client}")  # the address's and the name's counts stay: they count guessing
    _tok, secret, csrf = create_token(s, user, "session" if session else "login",
                                      kind="session" if session else "api", hours=SESSION_HOURS)
    return user, secret, csrf


def add_group(s: Session, name: str) -> Group:
    validate_name(name, "group name")
    if s.scalar(select(Group).where(Group.name == name)) is not None:
        raise Conflict(f"group '{name}' exists already", hint="pick another name")
    g = Group(name=name)
    s.add(g)
    s.flush()
    return g


def get_group(s: Session, name: str) -> Group:
    g = s.scalar(select(Group).where(Group.name == name))
    if g is None:
        raise NotFound(f"group '{name}' not found", hint="list groups with GET /api/v1/groups")
    return g


def add_member(s: Session, group: Group, user: User) -> None:
    exists = s.scalar(select(GroupMember).where(GroupMember.group_id == group.id, GroupMember.user_id == user.id))
    if exists is None:
        s.add(GroupMember(group_id=group.id, user_id=user.id))


def grant(s: Session, vm: str, *, user: User | None = None, group: Group | None = None,
          vm_uuid: str | None = None) -> None:
    """Delegate VM ``vm`` to a user (switching it to vm_scope 'granted') or to a group, bound to the VM's
    UUID ``vm_uuid`` (give it whenever the VM exists: a grant by name alone would pass to the next VM of
    that name). Granting again rebinds the grant to ``vm_uuid``."""
    validate_name(vm, "VM name")
    cond = VMGrant.user_id == user.id if user else VMGrant.group_id == (group.id if group else None)
    row = s.scalar(select(VMGrant).where(cond, VMGrant.vm_name == vm))
    if row is None:
        s.add(VMGrant(user_id=user.id if user else None, group_id=group.id if group else None, vm_name=vm,
                      vm_uuid=vm_uuid.lower() if vm_uuid else None))
    elif vm_uuid:
        row.vm_uuid = vm_uuid.lower()
    if user is not None and user.role != "admin":
        user.vm_scope = "granted"


def revoke_grant(s: Session, vm: str, *, user: User | None = None, group: Group | None = None) -> None:
    cond = VMGrant.user_id == user.id if user else VMGrant.group_id == (group.id if group else None)
    row = s.scalar(select(VMGrant).where(cond, VMGrant.vm_name == vm))
    if row is None:
        raise NotFound(f"VM '{vm}' is not granted there", hint="list grants with GET /api/v1/users/NAME/grants")
    s.delete(row)


def drop_vm_grants(s: Session, vm: str, vm_uuid: str | None) -> int:
    """Remove every grant of the VM ``vm`` (those bound to ``vm_uuid`` and those bound by name alone):
    called when kvmkit deletes the VM, so no grant passes to a later VM of that name. Returns how many."""
    from sqlalchemy import delete

    cond = VMGrant.vm_name == vm
    if vm_uuid:
        cond = cond & or_(VMGrant.vm_uuid.is_(None), VMGrant.vm_uuid == vm_uuid.lower())
    return int(s.execute(delete(VMGrant).where(cond)).rowcount or 0)  # type: ignore[attr-defined]


def grants_of(s: Session, *, user: User | None = None, group: Group | None = None) -> list[str]:
    cond = VMGrant.user_id == user.id if user else VMGrant.group_id == (group.id if group else None)
    return sorted(s.scalars(select(VMGrant.vm_name).where(cond)))
