"""The audit trail: an append-only, hash-chained, HMAC-sealed log of every accountable action.

Why a chain *and* an HMAC *and* an anchor: whoever can write the database can edit rows and
recompute plain hashes, so a hash chain alone proves nothing against an insider. Each entry is
therefore sealed with ``HMAC-SHA256(key, entry_hash)`` under a key kept *apart* from the
database (``$LAWTAP_AUDIT_KEY_FILE`` or ``<LAWTAP_HOME>/audit.key``, created 0600 on first use).
Dropping the newest entries leaves a perfectly valid chain, so the head of the chain
(``seq`` + ``entry_hash``, HMAC'd) is also written outside the table, to the *anchor* file
(``$LAWTAP_AUDIT_ANCHOR_FILE`` or ``<LAWTAP_HOME>/audit.anchor``) after every commit.

Entry layout (table ``audit_log``)::

    seq        1, 2, 3, ... (primary key; the order of the log)
    chain      random id of this log, fixed at the first entry
    ts         UTC instant, fixed-width ISO-8601 text "2024-05-01T12:00:00.000000Z"
    actor      who did it (user name, "x1:<client>", "system", "mediator", ...)
    action     what was done (see :data:`ACTIONS`)
    object     what it was done to (usually a LIID), may be NULL
    details    canonical JSON object (sorted keys, no whitespace)
    prev_hash  entry_hash of the previous entry ("0" * 64 for the first)
    entry_hash SHA-256 of the canonical JSON array
               [chain, seq, ts, actor, action, object, details, prev_hash]
    hmac       HMAC-SHA256(key, entry_hash), hex

:meth:`AuditLog.verify` names every tampered entry and how: ``edited`` (content no longer
matches its sealed hash, or content and hash rewritten without the key), ``deleted`` (a gap
in the chain), ``inserted`` (an entry the key never sealed, or one that belongs to another
chain), ``reordered`` (entries whose sealed content says they belong at another position),
``truncated`` (the anchor says the log was longer), and ``anchor`` (the anchor is missing or
forged, so tail truncation cannot be ruled out).

Action vocabulary used across lawtap (free text is allowed; these carry meaning in reports):

* warrant lifecycle, ``object`` = LIID: ``create`` / ``modify`` (details: the full warrant,
  see :func:`lawtap.intercept.warrants.WarrantSpec.to_dict`), ``approve``, ``revoke``
  (``reason``), ``expire``, ``view``, and ``denied`` for a refused request (``attempted``,
  ``reason``);
* ``intercept`` (``object`` = LIID): the collector intercepted traffic; details ``ts`` is the
  instant of the intercepted traffic (ISO-8601 or epoch seconds) and optionally ``ts_end``
  for a span; ``event`` may say ``start``/``stop``/``record``;
* ``delivery`` (``object`` = LIID): details ``count`` = records delivered (``hi``: ``hi2`` or
  ``hi3``), written periodically by the mediator, not per record;
* ``x1`` requests, ``login``, ``export`` / ``view`` of intercepted content.

Known limit: an attacker who keeps an *old* anchor file and the key-less database can roll
both back together to an earlier state; copy the head (``lawtap audit verify`` prints it) to
paper or a remote system to anchor externally.
"""

from __future__ import annotations

import bisect
import enum
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import tempfile
import uuid
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import Engine, Index, Integer, String, Text, event, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from lawtap.errors import LawtapError
from lawtap.intercept.db import Base, get_engine, is_memory_url, lawtap_home, url_identity

__all__ = [
    "ACTIONS",
    "GENESIS_HASH",
    "Anchor",
    "AuditEntry",
    "AuditLog",
    "Finding",
    "OversightReport",
    "Violation",
    "audit_anchor_path",
    "audit_key_path",
    "canonical_json",
    "format_ts",
    "load_audit_key",
    "parse_instant",
]

GENESIS_HASH = "0" * 64
ACTIONS = ("create", "modify", "approve", "revoke", "expire", "view", "denied", "intercept", "delivery",
           "x1", "login", "export")
WARRANT_ACTIONS = frozenset({"create", "modify", "approve", "revoke", "expire"})
INTERCEPT_ACTIONS = frozenset({"intercept", "intercept_start", "intercept_stop"})
FINDING_KINDS = ("edited", "deleted", "inserted", "reordered", "truncated", "anchor")
_MAX_TEXT = 200
_APPEND_RETRIES = 20


# --------------------------------------------------------------------------- table


class AuditRow(Base):
    """One sealed entry. Never updated or deleted by lawtap."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    chain: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(_MAX_TEXT))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str | None] = mapped_column(String(_MAX_TEXT), nullable=True)
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
    hmac: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_ts", "ts"),
        Index("ix_audit_log_action_object", "action", "object"),
    )


# --------------------------------------------------------------------------- canonical form


def format_ts(dt: datetime) -> str:
    """Fixed-width UTC text: sorts like time, survives every database byte for byte."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(value: Any) -> datetime | None:
    """ISO-8601 text (naive = UTC), epoch seconds, or datetime -> aware UTC; None if unusable."""
    try:
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, bool):
            return None
        elif isinstance(value, (int, float)):
            dt = datetime.fromtimestamp(float(value), tz=timezone.utc)
        elif isinstance(value, str):
            text = value.strip()
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            dt = datetime.fromisoformat(text)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def _json_default(o: Any) -> Any:
    if isinstance(o, datetime):
        return format_ts(o)
    if isinstance(o, date):
        return o.isoformat()
    if isinstance(o, (ipaddress.IPv4Address, ipaddress.IPv6Address,
                      ipaddress.IPv4Network, ipaddress.IPv6Network, PurePath, uuid.UUID)):
        return str(o)
    if isinstance(o, enum.Enum):
        return o.value
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=str)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 text, no NaN."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
    except (TypeError, ValueError, RecursionError) as e:
        raise LawtapError(f"audit details cannot be recorded: {e}") from None
    if not _utf8_ok(text):
        raise LawtapError("audit details cannot be recorded: text is not valid Unicode")
    return text


def _entry_hash(chain: Any, seq: Any, ts: Any, actor: Any, action: Any, obj: Any,
                details: Any, prev_hash: Any) -> str:
    """SHA-256 over the canonical array. Tolerates junk types so verify never crashes."""
    payload = json.dumps([chain, seq, ts, actor, action, obj, details, prev_hash],
                         separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def _seal(key: bytes, entry_hash: str) -> str:
    return hmac.new(key, str(entry_hash).encode("utf-8", "replace"), hashlib.sha256).hexdigest()


def _seal_ok(key: bytes, entry_hash: Any, mac: Any) -> bool:
    if not isinstance(entry_hash, str) or not isinstance(mac, str):
        return False
    return hmac.compare_digest(_seal(key, entry_hash).encode("ascii"), mac.encode("utf-8", "replace"))


# --------------------------------------------------------------------------- key


def audit_key_path() -> Path:
    """``$LAWTAP_AUDIT_KEY_FILE`` or ``<LAWTAP_HOME>/audit.key``."""
    env = os.environ.get("LAWTAP_AUDIT_KEY_FILE")
    return Path(env).expanduser() if env else lawtap_home() / "audit.key"


def audit_anchor_path() -> Path:
    """``$LAWTAP_AUDIT_ANCHOR_FILE`` or ``<LAWTAP_HOME>/audit.anchor``."""
    env = os.environ.get("LAWTAP_AUDIT_ANCHOR_FILE")
    return Path(env).expanduser() if env else lawtap_home() / "audit.anchor"


def load_audit_key(path: Path | None = None, *, create: bool = False) -> bytes:
    """Read the HMAC key (64+ hex characters); with ``create``, make one if absent.

    Creation writes a temporary 0600 file and hard-links it into place, so a process racing
    us either wins or reads the complete key of the winner, never a half-written one. A key
    readable by everyone or writable by the group is refused: it would let others forge seals.
    """
    path = path or audit_key_path()
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".audit-key-", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    try:
        st = path.stat()
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        raise LawtapError(f"audit key {path} not found (set LAWTAP_AUDIT_KEY_FILE or restore it)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LawtapError(f"audit key {path} unreadable: {e}") from None
    if st.st_mode & 0o027:
        raise LawtapError(f"audit key {path} has mode {st.st_mode & 0o777:04o}; "
                          f"it must not be group-writable or world-accessible (chmod 600)")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise LawtapError(f"audit key {path}: expected at least 64 hex characters")
    return key


# --------------------------------------------------------------------------- anchor


@dataclass(frozen=True, slots=True)
class Anchor:
    """The sealed head of a chain: the log had at least ``seq`` entries, the last one ``entry_hash``."""

    chain: str
    seq: int
    entry_hash: str

    def seal(self, key: bytes) -> str:
        msg = canonical_json(["lawtap-audit-anchor", self.chain, self.seq, self.entry_hash])
        return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).hexdigest()


_MEMORY_ANCHORS: weakref.WeakKeyDictionary[Engine, dict[str, Anchor]] = weakref.WeakKeyDictionary()
_ANCHOR_FORMAT = "lawtap-audit-anchor/1"


class AnchorStore:
    """The anchor file: one sealed head per database, advanced only forwards, under a lock.

    Private in-memory SQLite databases keep their anchor in memory (nothing of them outlives
    the process, and they must not collide with each other in one file).
    """

    def __init__(self, path: Path, engine: Engine) -> None:
        self.path = path
        self.db_id = url_identity(engine.url)
        self._memory: dict[str, Anchor] | None = None
        if is_memory_url(engine.url):
            self._memory = _MEMORY_ANCHORS.setdefault(engine, {})

    def read(self, key: bytes, chain: str | None = None) -> tuple[Anchor | None, str | None]:
        """(anchor, problem). problem is a one-line reason when the anchor cannot be trusted."""
        if self._memory is not None:
            return self._memory.get(self.db_id), None
        try:
            doc = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as e:
            return None, f"anchor file {self.path} unreadable: {e}"
        logs = doc.get("logs") if isinstance(doc, dict) else None
        if not isinstance(logs, dict):
            return None, f"anchor file {self.path} is not a lawtap anchor"
        rec = logs.get(self.db_id)
        if rec is None and chain is not None:  # database moved: find it by its chain id
            rec = next((r for r in logs.values() if isinstance(r, dict) and r.get("chain") == chain), None)
        if rec is None:
            return None, None
        try:
            anchor = Anchor(str(rec["chain"]), int(rec["seq"]), str(rec["hash"]))
            mac = str(rec["hmac"])
        except (KeyError, TypeError, ValueError):
            return None, f"anchor for {self.db_id} is malformed"
        if not hmac.compare_digest(anchor.seal(key).encode("ascii"), mac.encode("utf-8", "replace")):
            return None, f"anchor for {self.db_id} has an invalid HMAC (forged or other key)"
        return anchor, None

    def advance(self, key: bytes, anchor: Anchor) -> None:
        """Record ``anchor`` unless the stored head is already at or past its seq."""
        if self._memory is not None:
            cur = self._memory.get(self.db_id)
            if cur is None or anchor.seq > cur.seq or anchor.chain != cur.chain:
                self._memory[self.db_id] = anchor
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock_fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    doc = json.loads(self.path.read_text("utf-8"))
                    if not isinstance(doc, dict) or not isinstance(doc.get("logs"), dict):
                        doc = {}
                except (FileNotFoundError, ValueError):
                    doc = {}
                logs = doc.get("logs", {})
                cur = logs.get(self.db_id)
                if isinstance(cur, dict) and cur.get("chain") == anchor.chain:
                    try:
                        if int(cur.get("seq", -1)) >= anchor.seq:
                            return
                    except (TypeError, ValueError):
                        pass
                logs[self.db_id] = {"chain": anchor.chain, "seq": anchor.seq,
                                    "hash": anchor.entry_hash, "hmac": anchor.seal(key)}
                doc = {"format": _ANCHOR_FORMAT, "logs": logs}
                fd, tmp = tempfile.mkstemp(prefix=".audit-anchor-", dir=self.path.parent)
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        json.dump(doc, f, sort_keys=True, indent=1)
                        f.flush()
                        os.fsync(f.fileno())
                    os.chmod(tmp, 0o600)
                    os.replace(tmp, self.path)
                except BaseException:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                    raise
            finally:
                os.close(lock_fd)
        except OSError as e:
            raise LawtapError(f"audit entry {anchor.seq} committed but anchor {self.path} "
                              f"could not be written: {e.strerror or e}") from None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry as read back (details decoded)."""

    seq: int
    ts: datetime
    actor: str
    action: str
    object: str | None
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str
    hmac: str
    chain: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": format_ts(self.ts), "actor": self.actor,
                "action": self.action, "object": self.object, "details": self.details,
                "prev_hash": self.prev_hash, "entry_hash": self.entry_hash}


@dataclass(frozen=True, slots=True)
class Finding:
    """One integrity problem: ``kind`` (see :data:`FINDING_KINDS`) at ``seq`` (..``seq_end``)."""

    kind: str
    seq: int | None
    message: str
    seq_end: int | None = None

    def __str__(self) -> str:
        if self.seq is None:
            where = "log"
        elif self.seq_end is not None and self.seq_end != self.seq:
            where = f"seq {self.seq}-{self.seq_end}"
        else:
            where = f"seq {self.seq}"
        return f"{where}: {self.kind}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "seq_end": self.seq_end, "message": self.message}


@dataclass(frozen=True, slots=True)
class Violation:
    """An ``intercept`` entry for which no effective warrant existed."""

    seq: int
    liid: str
    ts: str
    reason: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.liid} at {self.ts}: {self.reason}"


@dataclass(frozen=True)
class OversightReport:
    """What an oversight body asks for over a period [start, end)."""

    start: datetime
    end: datetime
    entries: int
    actions: dict[str, int]
    warrants_by_authority: dict[str, int]
    targets_by_kind: dict[str, int]
    delivered: dict[str, int]
    violations: tuple[Violation, ...]
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def intercepted_outside_window(self) -> int:
        """Must be zero: intercepts without an effective warrant in this period."""
        return len(self.violations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": format_ts(self.start), "to": format_ts(self.end), "entries": self.entries,
            "actions": self.actions, "warrants_by_authority": self.warrants_by_authority,
            "targets_by_kind": self.targets_by_kind, "records_delivered": self.delivered,
            "intercepted_outside_window": self.intercepted_outside_window,
            "violations": [str(v) for v in self.violations],
            "integrity_findings": [str(f) for f in self.findings],
        }

    def to_text(self) -> str:
        def block(title: str, d: dict[str, int]) -> list[str]:
            lines = [f"{title}:"]
            lines += [f"  {k}: {v}" for k, v in sorted(d.items())] or ["  (none)"]
            return lines

        out = [f"audit report {format_ts(self.start)} .. {format_ts(self.end)} ({self.entries} entries)"]
        out += block("warrants by issuing authority", self.warrants_by_authority)
        out += block("targets by kind", self.targets_by_kind)
        out += block("actions", self.actions)
        out += block("records delivered per LIID", self.delivered)
        out.append(f"intercepted outside a warrant window: {self.intercepted_outside_window}")
        out += [f"  {v}" for v in self.violations]
        out.append("integrity: " + ("OK" if not self.findings else f"{len(self.findings)} finding(s)"))
        out += [f"  {f}" for f in self.findings]
        return "\n".join(out)


# --------------------------------------------------------------------------- the log


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _text(name: str, value: Any, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise LawtapError(f"audit {name} must be a non-empty string")
    value = value.strip()
    if len(value) > _MAX_TEXT:
        raise LawtapError(f"audit {name} longer than {_MAX_TEXT} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or not _utf8_ok(value):
        raise LawtapError(f"audit {name} contains control characters or invalid Unicode")
    return value


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class _Row:
    """A row as verify sees it, with the derived checks."""

    seq: int
    chain: Any
    prev: Any
    hash: Any
    auth: bool
    intact: bool
    raw: tuple[Any, ...]
    true_seq: int | None = None


class AuditLog:
    """Append to, read, verify and report on the audit trail of one database.

    ``AuditLog(session)`` appends inside the caller's transaction (so a warrant change and its
    entry commit together; the anchor is advanced after that commit).
    ``AuditLog(url_or_engine_or_None)`` commits each append by itself.
    """

    def __init__(self, target: Session | str | Engine | None = None, *,
                 key_file: Path | None = None, anchor_file: Path | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        if isinstance(target, Session):
            self._session: Session | None = target
            bind = target.get_bind()
            engine = bind.engine if isinstance(bind, Connection) else bind
            get_engine(engine)
        else:
            self._session = None
            engine = get_engine(target)
        self.engine: Engine = engine
        self.key_file = key_file or audit_key_path()
        self.anchors = AnchorStore(anchor_file or audit_anchor_path(), engine)
        self.clock = clock or _utcnow
        self._keybox: dict[str, bytes] = {}  # shared with in_session() views: load the key once

    def in_session(self, session: Session) -> AuditLog:
        """The same log (key, anchor, clock) appending inside ``session``'s transaction."""
        other = object.__new__(AuditLog)
        other.__dict__.update(self.__dict__)
        other._session = session
        return other

    # -- key

    def _key_for(self, session: Session, *, create: bool) -> bytes:
        if "key" in self._keybox:
            return self._keybox["key"]
        path = self.key_file
        if create and not path.exists():
            has_rows = session.execute(select(AuditRow.seq).limit(1)).first() is not None
            anchor_exists = self.anchors._memory is None and self.anchors.path.exists()
            if has_rows or anchor_exists:
                raise LawtapError(f"audit key {path} is missing but the audit log already has "
                                  f"entries; restore the key (a new one would forge the log)")
        self._keybox["key"] = key = load_audit_key(path, create=create)
        return key

    # -- sessions

    def _run(self, fn: Callable[[Session], Any]) -> Any:
        if self._session is not None:
            return fn(self._session)
        session = sessionmaker(self.engine, expire_on_commit=False)()
        try:
            result = fn(session)
            session.commit()
            return result
        except SQLAlchemyError as e:
            session.rollback()
            raise LawtapError(f"audit log database error: {str(getattr(e, 'orig', e)).splitlines()[0]}") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # -- append

    def append(self, actor: str, action: str, obj: str | None = None, /, **details: Any) -> AuditEntry:
        """Seal and store one entry; returns it. Details must be JSON-serialisable."""
        actor_s = _text("actor", actor, required=True) or ""
        action_s = _text("action", action, required=True) or ""
        obj_s = _text("object", obj, required=False)
        details_s = canonical_json(details)
        return self._run(lambda s: self._append(s, actor_s, action_s, obj_s, details_s))

    def _head(self, session: Session, key: bytes) -> tuple[str, int, str, int]:
        """(chain, seq, hash) of the newest *authentic* entry or the anchor, and the max seq seen.

        Chaining onto the anchor when the table lost its tail keeps the loss visible (as a gap)
        forever; chaining past a forged row keeps a forgery out of the authentic chain.
        """
        max_seq = 0
        last: tuple[str, int, str] | None = None
        result = session.execute(select(AuditRow.seq, AuditRow.chain, AuditRow.entry_hash, AuditRow.hmac)
                                 .order_by(AuditRow.seq.desc())).yield_per(64)
        for seq, chain, h, mac in result:
            try:
                seq = int(seq)
            except (TypeError, ValueError):
                continue
            max_seq = max(max_seq, seq)
            if _seal_ok(key, h, mac):
                last = (str(chain), seq, str(h))
                break
        result.close()
        anchor, _problem = self.anchors.read(key, last[0] if last else None)
        if anchor is not None and last is not None and anchor.chain != last[0]:
            anchor = None
        head: tuple[str, int, str]
        if anchor is not None and (last is None or anchor.seq > last[1]):
            head = (anchor.chain, anchor.seq, anchor.entry_hash)
        elif last is not None:
            head = last
        else:
            head = (uuid.uuid4().hex, 0, GENESIS_HASH)
        return head[0], head[1], head[2], max(max_seq, head[1])

    def _append(self, session: Session, actor: str, action: str, obj: str | None,
                details: str) -> AuditEntry:
        key = self._key_for(session, create=True)
        for _ in range(_APPEND_RETRIES):
            chain, _head_seq, prev, max_seq = self._head(session, key)
            seq = max_seq + 1
            ts = format_ts(self.clock())
            h = _entry_hash(chain, seq, ts, actor, action, obj, details, prev)
            row = AuditRow(seq=seq, chain=chain, ts=ts, actor=actor, action=action, object=obj,
                           details=details, prev_hash=prev, entry_hash=h, hmac=_seal(key, h))
            try:
                with session.begin_nested():
                    session.add(row)
            except IntegrityError:
                continue  # another writer took this seq (PostgreSQL); read the head again
            self._note_pending(session, Anchor(chain, seq, h))
            return AuditEntry(seq, parse_instant(ts) or self.clock(), actor, action, obj,
                              json.loads(details), prev, h, row.hmac, chain)
        raise LawtapError("audit log busy: could not append after repeated conflicts")

    def _note_pending(self, session: Session, anchor: Anchor) -> None:
        pending: Anchor | None = session.info.get("lawtap.audit.pending")
        if pending is None or anchor.seq > pending.seq:
            session.info["lawtap.audit.pending"] = anchor
        if not session.info.get("lawtap.audit.hooked"):
            session.info["lawtap.audit.hooked"] = True
            anchors, key = self.anchors, self._keybox["key"]

            def _after_commit(sess: Session) -> None:
                head = sess.info.pop("lawtap.audit.pending", None)
                if head is not None:
                    anchors.advance(key, head)

            def _after_rollback(sess: Session, previous: Any) -> None:
                if previous.parent is None:  # the whole transaction, not a savepoint retry
                    sess.info.pop("lawtap.audit.pending", None)

            event.listen(session, "after_commit", _after_commit)
            event.listen(session, "after_soft_rollback", _after_rollback)

    # -- read

    def entries(self, start: datetime | None = None, end: datetime | None = None, *,
                action: str | None = None, obj: str | None = None,
                last: int | None = None) -> list[AuditEntry]:
        """Entries in [start, end), optionally filtered; ``last`` keeps the newest N (in order)."""

        def run(session: Session) -> list[AuditEntry]:
            q = select(AuditRow)
            if start is not None:
                q = q.where(AuditRow.ts >= format_ts(start))
            if end is not None:
                q = q.where(AuditRow.ts < format_ts(end))
            if action is not None:
                q = q.where(AuditRow.action == action)
            if obj is not None:
                q = q.where(AuditRow.object == obj)
            if last is not None:
                rows = list(session.scalars(q.order_by(AuditRow.seq.desc()).limit(max(0, last))))[::-1]
            else:
                rows = list(session.scalars(q.order_by(AuditRow.seq)))
            return [_to_entry(r) for r in rows]

        return self._run(run)

    def count(self) -> int:
        return int(self._run(lambda s: s.execute(select(func.count()).select_from(AuditRow)).scalar_one()))

    def head(self) -> Anchor | None:
        """The newest entry as (chain, seq, hash), for anchoring the log externally."""

        def run(session: Session) -> Anchor | None:
            row = session.execute(select(AuditRow.chain, AuditRow.seq, AuditRow.entry_hash)
                                  .order_by(AuditRow.seq.desc()).limit(1)).first()
            return Anchor(str(row[0]), int(row[1]), str(row[2])) if row else None

        return self._run(run)

    # -- verify

    def verify(self) -> list[Finding]:
        """Every integrity problem in the log, in seq order; empty when the log is intact."""
        return self._run(self._verify)

    def _verify(self, session: Session) -> list[Finding]:
        if "key" not in self._keybox and not self.key_file.exists():
            empty = session.execute(select(AuditRow.seq).limit(1)).first() is None
            if empty and (self.anchors._memory is not None or not self.anchors.path.exists()):
                return []  # nothing was ever logged here: nothing to verify, no key needed
        key = self._key_for(session, create=False)
        rows: list[_Row] = []
        findings: list[Finding] = []
        t = AuditRow.__table__
        cols = (t.c.chain, t.c.seq, t.c.ts, t.c.actor, t.c.action, t.c.object, t.c.details,
                t.c.prev_hash, t.c.entry_hash, t.c.hmac)
        for raw in session.execute(select(*cols)).yield_per(1024):
            chain, seq, ts, actor, action, obj, details, prev, h, mac = raw
            if isinstance(seq, bool) or not isinstance(seq, int):
                findings.append(Finding("edited", None, f"an entry has a corrupt seq {seq!r}"))
                continue
            intact = _entry_hash(chain, seq, ts, actor, action, obj, details, prev) == h
            rows.append(_Row(seq, chain, prev, h, _seal_ok(key, h, mac), intact, tuple(raw)))
        rows.sort(key=lambda r: r.seq)

        # Which chain is this log? The anchor's, else the one most authentic entries carry.
        anchor, problem = self.anchors.read(key)
        chains = Counter(r.chain for r in rows if r.auth)
        main_chain = anchor.chain if anchor is not None else (chains.most_common(1)[0][0] if chains else None)
        if anchor is None and problem is None and main_chain is not None:
            anchor, problem = self.anchors.read(key, main_chain)
        if anchor is not None and anchor.chain != main_chain:
            anchor = None
        foreign = [r for r in rows if r.auth and r.chain != main_chain]
        for r in foreign:
            r.auth = False
        authentic = [r for r in rows if r.auth]
        forged = [r for r in rows if not r.auth]

        _resolve_true_seqs(authentic, anchor)
        moved = [r for r in authentic if r.true_seq is not None and r.true_seq != r.seq]
        permutation = sorted(r.seq for r in moved) == sorted(r.true_seq or 0 for r in moved)
        for r in authentic:
            if r.intact:
                continue
            if r.true_seq is None:
                r.true_seq = r.seq
                findings.append(Finding("edited", r.seq, f"{_describe(r)}: content does not match its sealed hash"))
            elif r.true_seq != r.seq:
                kind = "reordered" if permutation else "edited"
                findings.append(Finding(kind, r.seq, f"{_describe(r)}: sealed as seq {r.true_seq}, "
                                                     f"stored at seq {r.seq}"))
        for r in foreign:
            findings.append(Finding("inserted", r.seq, f"{_describe(r)}: belongs to another audit chain"))
        foreign_ids = {id(r) for r in foreign}
        forged = [r for r in forged if id(r) not in foreign_ids]

        findings += _walk_chain(authentic, forged, anchor)
        if problem is not None:
            findings.append(Finding("anchor", None, problem))
        elif anchor is None and rows:
            findings.append(Finding("anchor", None, f"no anchor for this log in {self.anchors.path}: "
                                                    f"truncation of the tail cannot be ruled out"))
        findings.sort(key=lambda f: (f.seq if f.seq is not None else -1, FINDING_KINDS.index(f.kind)
                                     if f.kind in FINDING_KINDS else 99))
        return findings

    # -- report

    def report(self, start: datetime, end: datetime, *, check_integrity: bool = True) -> OversightReport:
        """Oversight summary over [start, end), computed from the log alone.

        Warrant definitions come from the ``create``/``modify`` entries (so the report does not
        trust the mutable warrant table); a warrant counts when its validity window overlaps
        the period or it has any entry in it. An ``intercept`` entry is a violation when its
        LIID has no warrant, its traffic time lies outside the window, or it was logged before
        the warrant's approval or after its revocation.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise LawtapError("report period needs time zones (UTC)")
        if end <= start:
            raise LawtapError("report period is empty: --to must be after --from")
        lo, hi = format_ts(start), format_ts(end)

        def run(session: Session) -> OversightReport:
            history: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
            approvals: dict[str, list[list[int | None]]] = defaultdict(list)
            revoked: dict[str, int] = {}
            q = (select(AuditRow.seq, AuditRow.action, AuditRow.object, AuditRow.details)
                 .where(AuditRow.action.in_(sorted(WARRANT_ACTIONS))).order_by(AuditRow.seq))
            for seq, action, obj, details in session.execute(q):
                if obj is None:
                    continue
                d = _loads(details)
                spans = approvals[obj]
                if action in ("create", "modify"):
                    history[obj].append((seq, d))
                    if d.get("reapproval_required") and spans and spans[-1][1] is None:
                        spans[-1][1] = seq
                elif action == "approve":
                    spans.append([seq, None])
                elif action == "revoke":
                    revoked.setdefault(obj, seq)
                    if spans and spans[-1][1] is None:
                        spans[-1][1] = seq

            actions: Counter[str] = Counter()
            delivered: Counter[str] = Counter()
            touched: set[str] = set()
            violations: list[Violation] = []
            n = 0
            q2 = (select(AuditRow.seq, AuditRow.ts, AuditRow.action, AuditRow.object, AuditRow.details)
                  .where(AuditRow.ts >= lo, AuditRow.ts < hi).order_by(AuditRow.seq))
            for seq, ts, action, obj, details in session.execute(q2).yield_per(1024):
                n += 1
                actions[action] += 1
                if obj is not None:
                    touched.add(obj)
                if action == "delivery" and obj is not None:
                    d = _loads(details)
                    c = d.get("count", 1)
                    delivered[obj] += c if isinstance(c, int) and not isinstance(c, bool) else 0
                elif action in INTERCEPT_ACTIONS:
                    v = _check_intercept(seq, ts, obj, _loads(details), history, approvals, revoked)
                    if v is not None:
                        violations.append(v)

            by_authority: Counter[str] = Counter()
            by_kind: Counter[str] = Counter()
            for liid, hist in history.items():
                d = hist[-1][1]
                vf, vu = parse_instant(d.get("valid_from")), parse_instant(d.get("valid_until"))
                overlaps = vf is not None and vu is not None and vf < end and vu > start
                if not (overlaps or liid in touched):
                    continue
                by_authority[str(d.get("authority", "?"))] += 1
                for t in d.get("targets", []) if isinstance(d.get("targets"), list) else []:
                    if isinstance(t, dict):
                        by_kind[str(t.get("kind", "?"))] += 1
            findings = tuple(self._verify(session)) if check_integrity else ()
            return OversightReport(start, end, n, dict(actions), dict(by_authority), dict(by_kind),
                                   dict(delivered), tuple(violations), findings)

        return self._run(run)


def _walk_chain(authentic: list[_Row], forged: list[_Row], anchor: Anchor | None) -> list[Finding]:
    """Walk the sealed entries in the order their hashes prove and name what breaks the chain.

    Forged rows (no valid HMAC) are placed by their stored seq: one the chain skips over was
    inserted; one sitting in a hole where a sealed entry is missing replaced it (edited);
    holes nothing fills are deletions, or truncation when they lie past the table's end but
    within the anchor.
    """
    findings: list[Finding] = []
    for f in [f for f in forged if f.seq < 1]:
        findings.append(Finding("inserted", f.seq, f"{_describe(f)}: not sealed by the audit key"))
    forged = [f for f in forged if f.seq >= 1]
    authentic.sort(key=lambda r: (r.true_seq, r.seq))
    forged_by_seq: dict[int, list[_Row]] = defaultdict(list)
    for r in forged:
        forged_by_seq[r.seq].append(r)
    forged_seqs = sorted(forged_by_seq)

    def forged_between(lo: int, hi: int) -> list[_Row]:
        """Forged rows with lo < seq < hi, plus duplicates of lo."""
        out = list(forged_by_seq.get(lo, []))
        i = bisect.bisect_right(forged_seqs, lo)
        while i < len(forged_seqs) and forged_seqs[i] < hi:
            out += forged_by_seq[forged_seqs[i]]
            i += 1
        return out

    prev_seq, prev_hash = 0, GENESIS_HASH
    occupied: set[int] = set()
    for r in authentic:
        assert r.true_seq is not None
        between = forged_between(prev_seq, r.true_seq)
        if r.prev == prev_hash:
            for f in between:
                findings.append(Finding("inserted", f.seq, f"{_describe(f)}: not sealed by the audit key; "
                                                           f"the chain skips it"))
        else:
            occupied.clear()
            for f in between:
                if f.hash == r.prev:
                    findings.append(Finding("inserted", f.seq, f"{_describe(f)}: not sealed by the audit key"))
                elif prev_seq < f.seq < r.true_seq and f.seq not in occupied:
                    occupied.add(f.seq)
                    findings.append(Finding("edited", f.seq, f"{_describe(f)}: content and hash rewritten "
                                                             f"(HMAC invalid)"))
                else:
                    findings.append(Finding("inserted", f.seq, f"{_describe(f)}: not sealed by the audit key"))
            findings += _gaps("deleted", prev_seq + 1, r.true_seq - 1, occupied,
                              f"missing before seq {r.true_seq} (chain link broken)")
            if r.true_seq == prev_seq + 1 and not between:
                findings.append(Finding("deleted", r.true_seq, "chain link to the previous entry is broken"))
        prev_seq, prev_hash = r.true_seq, r.hash

    tail = forged_between(prev_seq, 1 << 62)
    if anchor is not None and anchor.seq > prev_seq:
        occupied.clear()
        for f in tail:
            if prev_seq < f.seq <= anchor.seq and f.seq not in occupied:
                occupied.add(f.seq)
                findings.append(Finding("edited", f.seq, f"{_describe(f)}: content and hash rewritten "
                                                         f"(HMAC invalid)"))
            else:
                findings.append(Finding("inserted", f.seq, f"{_describe(f)}: not sealed by the audit key"))
        findings += _gaps("truncated", prev_seq + 1, anchor.seq, occupied,
                          f"the anchor records {anchor.seq} entries; these are gone")
    else:
        for f in tail:
            findings.append(Finding("inserted", f.seq, f"{_describe(f)}: not sealed by the audit key"))
        if anchor is not None and anchor.seq == prev_seq and anchor.entry_hash != prev_hash:
            findings.append(Finding("anchor", anchor.seq, "the anchor disagrees with the last entry"))
    return findings


def _check_intercept(seq: int, ts: str, obj: str | None, d: dict[str, Any],
                     history: dict[str, list[tuple[int, dict[str, Any]]]],
                     approvals: dict[str, list[list[int | None]]],
                     revoked: dict[str, int]) -> Violation | None:
    """Was an effective warrant behind this intercept entry? None when it was."""
    liid = obj or str(d.get("liid", ""))
    when = [parse_instant(d[k]) for k in ("ts", "ts_end") if k in d]
    if not when:
        when = [parse_instant(ts)]
    shown = format_ts(when[0]) if when[0] is not None else str(d.get("ts", ts))
    hist = history.get(liid)
    if not hist:
        return Violation(seq, liid or "?", shown, "no warrant with this LIID")
    # The definition in force when the entry was written (a later modify does not count).
    i = bisect.bisect_left([h[0] for h in hist], seq) - 1
    w = hist[max(i, 0)][1]
    vf, vu = parse_instant(w.get("valid_from")), parse_instant(w.get("valid_until"))
    if any(t is None for t in when) or vf is None or vu is None:
        return Violation(seq, liid, shown, "traffic time or warrant window unreadable")
    for t in when:
        assert t is not None
        if not (vf <= t < vu):
            return Violation(seq, liid, format_ts(t), f"outside the window {format_ts(vf)} .. {format_ts(vu)}")
    if any(a is not None and a < seq and (b is None or seq < b) for a, b in approvals.get(liid, [])):
        return None
    if liid in revoked and seq > revoked[liid]:
        return Violation(seq, liid, shown, "logged after the warrant was revoked")
    return Violation(seq, liid, shown, "logged while the warrant was not approved")


def _loads(text: Any) -> dict[str, Any]:
    try:
        d = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _to_entry(r: AuditRow) -> AuditEntry:
    ts = parse_instant(r.ts) or datetime.fromtimestamp(0, timezone.utc)
    details = _loads(r.details) if r.details is not None else {}
    return AuditEntry(r.seq, ts, r.actor, r.action, r.object, details, r.prev_hash, r.entry_hash,
                      r.hmac, r.chain)


def _describe(r: _Row) -> str:
    _chain, _seq, ts, actor, action, obj = r.raw[:6]
    what = f"{action} {obj}" if obj else f"{action}"
    return f"[{ts} {actor}: {what}]"


def _gaps(kind: str, lo: int, hi: int, occupied: set[int], message: str) -> list[Finding]:
    """Findings for the runs of seqs in [lo, hi] not in ``occupied``."""
    out: list[Finding] = []
    run_start: int | None = None
    for s in range(lo, hi + 2):
        free = s <= hi and s not in occupied
        if free and run_start is None:
            run_start = s
        elif not free and run_start is not None:
            n = s - run_start
            out.append(Finding(kind, run_start, f"{n} entr{'y' if n == 1 else 'ies'} {message}",
                               s - 1 if n > 1 else None))
            run_start = None
    return out


def _resolve_true_seqs(authentic: list[_Row], anchor: Anchor | None) -> None:
    """Find the seq each sealed entry was written with (its hash proves it).

    Intact rows are where they were sealed. A sealed row whose hash fails may have been moved:
    its predecessor (found by ``prev_hash``) says which seq it had; otherwise try the seqs of
    the other failing rows (a swap) and the anchor.
    """
    by_hash: dict[Any, _Row] = {}
    for r in authentic:
        by_hash.setdefault(r.hash, r)
        if r.intact:
            r.true_seq = r.seq
    broken = [r for r in authentic if not r.intact]
    if not broken:
        return
    pool = sorted({r.seq for r in broken})

    def fits(r: _Row, seq: int) -> bool:
        chain, _s, ts, actor, action, obj, details, prev, _h, _m = r.raw
        return _entry_hash(chain, seq, ts, actor, action, obj, details, prev) == r.hash

    done: set[int] = set()
    for start in broken:
        # Walk back along prev_hash until an entry whose seq is known (or the genesis).
        path: list[_Row] = []
        seen: set[int] = set()
        cur: _Row | None = start
        base: int | None = None
        while cur is not None and id(cur) not in done and id(cur) not in seen:
            if cur.true_seq is not None and cur.intact:
                base = cur.true_seq
                break
            seen.add(id(cur))
            path.append(cur)
            if cur.prev == GENESIS_HASH:
                base = 0
                break
            cur = by_hash.get(cur.prev)
        if cur is not None and id(cur) in done:
            base = cur.true_seq
        for r in reversed(path):
            cand: list[int] = []
            if base is not None:
                cand.append(base + 1)
            if anchor is not None and r.hash == anchor.entry_hash:
                cand.append(anchor.seq)
            cand += pool
            r.true_seq = next((c for c in cand if fits(r, c)), None)
            done.add(id(r))
            base = r.true_seq
