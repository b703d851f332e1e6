"""Warrants: what may be intercepted, about whom, for whom, and when; and who decided it.

A warrant names its LIID (the Lawful Interception IDentifier carried in every PS-PDU), the
issuing authority and legal reference, the receiving agency with its HI2 (IRI) and HI3 (CC)
handover endpoints, the targets, the scope (``iri`` = intercept-related information only, or
``iri+cc`` = also the content of communication) and a validity window in UTC.

Life cycle (rules enforced here, in the service layer, so the CLI, X1 and tests all obey them)::

    draft --approve (by someone other than the creator/last modifier)--> approved
    draft | approved --revoke (reason required)--> revoked          (terminal)
    draft | approved --now >= valid_until (observed, audited)--> expired  (terminal)
    draft | approved --modify--> draft   (a changed warrant is a new decision: approve again)

A warrant is *effective* at instant ``t`` only when it is approved and
``valid_from <= t < valid_until``; "active" in listings means effective now. Every change and
every refusal writes an audit entry (:mod:`lawtap.intercept.audit`) in the same transaction.

YAML format (``lawtap warrant create FILE.yaml --user U``); unknown keys are errors, times
need a zone (``Z`` or ``+01:00``), and every value is read as text (``imsi: 0123...`` keeps its
leading zero: YAML's int/float/bool guessing is switched off)::

    liid: LI-2024-0001                 # 1..25 visible ASCII characters (ETSI LIID)
    authority: Amtsgericht Musterstadt
    legal_reference: "§ 100a StPO; 23 Gs 123/24"
    agency:
      name: LKA Musterland
      hi2: lemf.example.org:6001       # host:port, IPv6 as [2001:db8::1]:6001
      hi3: lemf.example.org:6002       # required when scope is iri+cc
    scope: iri+cc                      # iri | iri+cc
    valid_from: 2024-05-01T00:00:00Z
    valid_until: 2024-08-01T00:00:00Z
    targets:
      - {kind: ipv4, value: 10.0.0.7}
      - {kind: prefix, value: 2001:db8:42::/48}
      - {kind: email, value: Alice@Example.ORG}      # stored lower-case
      - {kind: sip_uri, value: "<sip:alice@Example.org;transport=tcp>"}  # -> sip:alice@example.org
      - {kind: e164, value: "+49 30 1234567"}       # -> 49301234567
      - {kind: imsi, value: "262011234567890"}
      - {kind: imei, value: "35-209900-176148-1"}   # -> 352099001761481

Target kinds and their normal forms: ``ipv4``/``ipv6`` (one address, compressed),
``prefix`` (a network, host bits must be zero), ``username`` (lower-case: AAA systems match
user names case-insensitively), ``email`` (lower-case, IDN domains as A-labels),
``sip_uri`` (``sip:user@host``: scheme ``sip``/``sips`` folded, host lower-case, port,
password, parameters and headers dropped), ``e164``/``msisdn`` (5..15 digits, ``+``,
``tel:`` and separators removed), ``imsi`` (14..15 digits), ``imei`` (14..16 digits; matched
on the first 14, TAC+SNR, so an IMEI, IMEI with check digit and IMEISV of one device agree;
the check digit is not verified because networks transmit it as 0).

For the collector: :meth:`WarrantStore.effective_warrants` and :meth:`WarrantStore.target_set`,
an immutable :class:`TargetSet` that maps addresses and identities to :class:`Tap` objects
(LIID, window, scope) and checks the window per packet.
"""

from __future__ import annotations

import builtins
import getpass
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

import yaml
from sqlalchemy import DateTime, Engine, ForeignKey, Index, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, sessionmaker

from lawtap.errors import LawtapError
from lawtap.intercept.audit import AuditLog, format_ts
from lawtap.intercept.db import Base, from_db_time, get_engine, to_db_time

__all__ = [
    "SCOPES",
    "STATES",
    "TARGET_KINDS",
    "Tap",
    "Target",
    "TargetSet",
    "Warrant",
    "WarrantSpec",
    "WarrantStore",
    "dump_warrant_yaml",
    "load_warrant_yaml",
    "normalize_endpoint",
    "normalize_liid",
    "normalize_target",
    "parse_warrant",
]

TARGET_KINDS = ("ipv4", "ipv6", "prefix", "username", "email", "sip_uri", "e164", "imsi", "msisdn", "imei")
SCOPES = ("iri", "iri+cc")
STATES = ("draft", "approved", "revoked", "expired")
TERMINAL = frozenset({"revoked", "expired"})
SYSTEM_ACTOR = "system"
MAX_YAML_BYTES = 1 << 20
_LIID_RE = re.compile(r"[!-~]{1,25}")
_HOST_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_SEPARATORS_RE = re.compile(r"[\s\-.()/]")


# --------------------------------------------------------------------------- validation


def _no_controls(text: str) -> bool:
    return not any(unicodedata.category(c).startswith("C") for c in text)


def _clean_text(name: str, value: Any, limit: int = 200) -> str:
    if not isinstance(value, str):
        raise LawtapError(f"{name}: expected text, got {_shown(value)}")
    text = value.strip()
    if not text:
        raise LawtapError(f"{name}: must not be empty")
    if len(text) > limit:
        raise LawtapError(f"{name}: longer than {limit} characters")
    if not _no_controls(text):
        raise LawtapError(f"{name}: contains control characters")
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def normalize_liid(value: Any) -> str:
    """1..25 visible ASCII characters (the ETSI LawfulInterceptionIdentifier)."""
    if not isinstance(value, str) or not _LIID_RE.fullmatch(value.strip()):
        raise LawtapError(f"liid {_shown(value)}: must be 1-25 visible ASCII characters (no spaces)")
    return value.strip()


def _hostname(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            raise ValueError("IPv6 scope ids are not allowed")
        return str(ip)
    h = host.lower().rstrip(".")
    if not h.isascii():
        try:
            h = h.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"invalid host name {host!r}") from None
    if not h or len(h) > 253 or not all(_HOST_LABEL_RE.fullmatch(lbl) for lbl in h.split(".")):
        raise ValueError(f"invalid host name {host!r}")
    return h


def normalize_endpoint(value: Any, name: str = "endpoint") -> str:
    """``host:port`` (IPv6 in brackets) -> normal form; the port must be 1..65535."""
    if not isinstance(value, str) or not value.strip():
        raise LawtapError(f"{name}: expected host:port, got {_shown(value)}")
    text = value.strip()
    try:
        if text.startswith("["):
            end = text.find("]")
            if end < 0 or text[end + 1:end + 2] != ":":
                raise ValueError("expected [IPv6]:port")
            host, port_s = text[1:end], text[end + 2:]
            ip = ipaddress.IPv6Address(host)
            if ip.scope_id:
                raise ValueError("IPv6 scope ids are not allowed")
            host_n = f"[{ip}]"
        else:
            host, sep, port_s = text.rpartition(":")
            if not sep or not host:
                raise ValueError("expected host:port")
            if ":" in host:
                raise ValueError("write an IPv6 address in brackets: [2001:db8::1]:6001")
            host_n = _hostname(host)
        if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
            raise ValueError(f"port {port_s!r} is not in 1..65535")
    except ValueError as e:
        raise LawtapError(f"{name} {_shown(value)}: {e}") from None
    return f"{host_n}:{int(port_s)}"


def _digits(value: Any, *, allow_plus: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected digits, got {type(value).__name__}")
    text = str(value).strip()
    if allow_plus:
        if text.lower().startswith("tel:"):
            text = text[4:].split(";", 1)[0]
        text = _SEPARATORS_RE.sub("", text)
        if text.startswith("+"):
            text = text[1:]
    else:
        text = _SEPARATORS_RE.sub("", text)
    if not text.isascii() or not text.isdigit():
        raise ValueError("must contain digits only")
    return text


def _sip(value: str) -> str:
    text = value.strip()
    if text.endswith(">") and "<" in text:  # name-addr: "Alice" <sip:alice@example.org>
        text = text[text.rindex("<") + 1:-1].strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        raise ValueError("must start with sip: or sips:")
    rest = rest.split("?", 1)[0]
    userinfo, at, hostport = rest.rpartition("@")
    if not at or not userinfo:
        raise ValueError("needs a user part (sip:user@host)")
    user = unquote(userinfo.split(":", 1)[0], errors="strict")  # drop a password
    if not user or not _no_controls(user) or any(c in user for c in " <>@\"") or len(user) > 128:
        raise ValueError("invalid user part")
    hostport = hostport.split(";", 1)[0]
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError("unterminated IPv6 reference")
        ip = ipaddress.IPv6Address(hostport[1:end])
        if ip.scope_id:
            raise ValueError("IPv6 scope ids are not allowed")
        host = f"[{ip}]"
        tail = hostport[end + 1:]
    else:
        host_s, colon, port = hostport.partition(":")
        tail = colon + port
        host = _hostname(host_s)
        if ":" in host:
            host = f"[{host}]"
    if tail and not (tail.startswith(":") and tail[1:].isdigit() and 1 <= int(tail[1:]) <= 65535):
        raise ValueError(f"invalid port {tail!r}")
    return f"sip:{user}@{host}"


def _email(value: str) -> str:
    text = value.strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("expected local@domain")
    if len(local) > 64 or any(c.isspace() or c in "<>()[],;:@\\\"" for c in local) or not _no_controls(local):
        raise ValueError("invalid local part")
    if domain.startswith("["):
        raise ValueError("address literals are not supported")
    host = _hostname(domain)
    if "." not in host:
        raise ValueError("domain needs a dot")
    return f"{local.lower()}@{host}"


def normalize_target(kind: str, value: Any) -> str:
    """Validate ``value`` as a target of ``kind``; return its normal form (see module doc)."""
    if kind not in TARGET_KINDS:
        raise LawtapError(f"target kind {_shown(kind)}: must be one of {', '.join(TARGET_KINDS)}")
    try:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"expected text, got {type(value).__name__}")
        if kind in ("e164", "msisdn", "imsi", "imei"):
            d = _digits(value, allow_plus=kind in ("e164", "msisdn"))
            lo, hi = {"e164": (5, 15), "msisdn": (5, 15), "imsi": (14, 15), "imei": (14, 16)}[kind]
            if not lo <= len(d) <= hi:
                raise ValueError(f"must be {lo}-{hi} digits, got {len(d)}")
            return d
        text = str(value).strip()
        if not text:
            raise ValueError("empty")
        if kind in ("ipv4", "ipv6"):
            if "/" in text:
                raise ValueError("a network; use kind 'prefix'")
            ip = ipaddress.ip_address(text)
            if f"ipv{ip.version}" != kind:
                raise ValueError(f"is an IPv{ip.version} address; use kind 'ipv{ip.version}'")
            if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
                raise ValueError("IPv6 scope ids are not allowed")
            return str(ip)
        if kind == "prefix":
            try:
                return str(ipaddress.ip_network(text, strict=True))
            except ValueError as e:
                if "host bits" in str(e):
                    hint = ipaddress.ip_network(text, strict=False)
                    raise ValueError(f"host bits set; did you mean {hint}?") from None
                raise
        if kind == "username":
            if len(text) > 253 or not _no_controls(text) or any(c.isspace() for c in text):
                raise ValueError("user names are 1-253 characters without spaces or control characters")
            return text.lower()
        if kind == "email":
            return _email(text)
        return _sip(text)  # sip_uri
    except (ValueError, UnicodeError) as e:
        raise LawtapError(f"target {kind} {_shown(value)}: {e}") from None


def _instant(name: str, value: Any) -> datetime:
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise LawtapError(f"{name} {_shown(value)}: not an ISO-8601 time (2024-05-01T00:00:00Z)") from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise LawtapError(f"{name} {value.isoformat()}: needs a time zone, e.g. {value.isoformat()}Z")
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        raise LawtapError(f"{name} {value.isoformat()}: give a time and zone, e.g. {value.isoformat()}T00:00:00Z")
    raise LawtapError(f"{name}: expected a time, got {_shown(value)}")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """One target identity; build with :meth:`of` so the value is validated and normalised."""

    kind: str
    value: str

    @classmethod
    def of(cls, kind: str, value: Any) -> Target:
        return cls(kind, normalize_target(kind, value))

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "value": self.value}


def _iso(dt: datetime) -> str:
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if not dt.microsecond else format_ts(dt)


@dataclass(frozen=True)
class WarrantSpec:
    """What the authority decided. Constructing one validates and normalises every field."""

    liid: str
    authority: str
    legal_reference: str
    agency: str
    hi2: str
    hi3: str | None
    scope: str
    valid_from: datetime
    valid_until: datetime
    targets: tuple[Target, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        put("liid", normalize_liid(self.liid))
        put("authority", _clean_text("authority", self.authority))
        put("legal_reference", _clean_text("legal_reference", self.legal_reference, 500))
        put("agency", _clean_text("agency.name", self.agency))
        put("hi2", normalize_endpoint(self.hi2, "agency.hi2"))
        put("hi3", None if self.hi3 in (None, "") else normalize_endpoint(self.hi3, "agency.hi3"))
        scope = self.scope.strip().lower() if isinstance(self.scope, str) else self.scope
        if scope not in SCOPES:
            raise LawtapError(f"scope {_shown(self.scope)}: must be 'iri' or 'iri+cc'")
        if scope == "iri+cc" and self.hi3 is None:
            raise LawtapError("scope iri+cc needs agency.hi3 (the HI3 endpoint for content)")
        put("scope", scope)
        put("valid_from", _instant("valid_from", self.valid_from))
        put("valid_until", _instant("valid_until", self.valid_until))
        if self.valid_until <= self.valid_from:
            raise LawtapError("valid_until must be after valid_from")
        seen: dict[Target, None] = {}
        for i, t in enumerate(self.targets):
            try:
                if isinstance(t, Target):
                    t = Target.of(t.kind, t.value)
                elif isinstance(t, Mapping):
                    extra = set(t) - {"kind", "value"}
                    if extra:
                        raise LawtapError(f"unknown key {sorted(extra)[0]!r}")
                    if "kind" not in t or "value" not in t:
                        raise LawtapError("needs kind and value")
                    t = Target.of(t["kind"], t["value"])
                elif isinstance(t, (tuple, list)) and len(t) == 2:
                    t = Target.of(t[0], t[1])
                else:
                    raise LawtapError(f"expected {{kind, value}}, got {_shown(t)}")
            except LawtapError as e:
                raise LawtapError(f"targets[{i}]: {e}") from None
            seen.setdefault(t, None)
        if not seen:
            raise LawtapError("a warrant needs at least one target")
        put("targets", tuple(seen))

    @property
    def includes_cc(self) -> bool:
        return self.scope == "iri+cc"

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON shape (also what the audit trail records for create/modify)."""
        agency: dict[str, Any] = {"name": self.agency, "hi2": self.hi2}
        if self.hi3 is not None:
            agency["hi3"] = self.hi3
        return {
            "liid": self.liid, "authority": self.authority, "legal_reference": self.legal_reference,
            "agency": agency, "scope": self.scope,
            "valid_from": _iso(self.valid_from), "valid_until": _iso(self.valid_until),
            "targets": [t.to_dict() for t in self.targets],
        }

    def to_yaml(self) -> str:
        return dump_warrant_yaml(self)


_SPEC_KEYS = {"liid", "authority", "legal_reference", "agency", "scope", "valid_from", "valid_until", "targets"}
_AGENCY_KEYS = {"name", "hi2", "hi3"}


def parse_warrant(doc: Any) -> WarrantSpec:
    """A mapping in the YAML shape -> validated :class:`WarrantSpec`.

    ``targets`` is a list of ``{kind, value}``; the short form ``{kind: [values]}`` (a mapping
    from kind to one value or a list of values) is accepted too.
    """
    if not isinstance(doc, Mapping):
        raise LawtapError(f"a warrant is a mapping of fields, got {type(doc).__name__}")
    unknown = sorted(str(k) for k in set(doc) - _SPEC_KEYS)
    if unknown:
        raise LawtapError(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(_SPEC_KEYS))})")
    missing = sorted(_SPEC_KEYS - set(doc) - {"targets"})
    if missing:
        raise LawtapError(f"missing field {missing[0]!r}")
    agency = doc["agency"]
    if not isinstance(agency, Mapping):
        raise LawtapError("agency: expected a mapping with name, hi2 and hi3")
    unknown = sorted(str(k) for k in set(agency) - _AGENCY_KEYS)
    if unknown:
        raise LawtapError(f"agency: unknown field {unknown[0]!r} (fields: name, hi2, hi3)")
    for k in ("name", "hi2"):
        if k not in agency:
            raise LawtapError(f"agency: missing field {k!r}")
    raw_targets = doc.get("targets")
    targets: list[Any]
    if raw_targets is None:
        targets = []
    elif isinstance(raw_targets, Mapping):
        targets = []
        for kind, values in raw_targets.items():
            for v in values if isinstance(values, list) else [values]:
                targets.append({"kind": kind, "value": v})
    elif isinstance(raw_targets, list):
        targets = raw_targets
    else:
        raise LawtapError("targets: expected a list of {kind, value}")
    return WarrantSpec(
        liid=doc["liid"], authority=doc["authority"], legal_reference=doc["legal_reference"],
        agency=agency["name"], hi2=agency["hi2"], hi3=agency.get("hi3"), scope=doc["scope"],
        valid_from=doc["valid_from"], valid_until=doc["valid_until"], targets=tuple(targets),
    )


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads scalars as text (no octal/bool/float surprises) and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                dup = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "unhashable key", key_node.start_mark) from None
            if dup:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_DROP_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"}
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in _DROP_TAGS]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)  # type: ignore[arg-type]


def load_warrant_yaml(source: str | bytes | Path, *, name: str | None = None) -> WarrantSpec:
    """Parse a warrant YAML document (text, bytes, or a file path) into a :class:`WarrantSpec`."""
    if isinstance(source, Path):
        name = name or str(source)
        try:
            with source.open("rb") as f:
                data = f.read(MAX_YAML_BYTES + 1)
        except OSError as e:
            raise LawtapError(f"{source}: {e.strerror or e}") from None
    else:
        data = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source
    where = name or "warrant"
    if len(data) > MAX_YAML_BYTES:
        raise LawtapError(f"{where}: larger than {MAX_YAML_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LawtapError(f"{where}: not UTF-8 text (byte {e.start})") from None
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise LawtapError(f"{where}: not valid YAML{at}: {problem}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. 2024-13-45 timestamps
        raise LawtapError(f"{where}: not valid YAML: {e}") from None
    try:
        return parse_warrant(doc)
    except LawtapError as e:
        raise LawtapError(f"{where}: {e}") from None


def dump_warrant_yaml(spec: WarrantSpec) -> str:
    """The YAML document :func:`load_warrant_yaml` reads back to an equal spec."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=False)


@dataclass(frozen=True)
class Warrant:
    """A stored warrant as seen at one moment (a detached, immutable snapshot)."""

    spec: WarrantSpec
    state: str
    created_by: str
    created_at: datetime
    modified_by: str | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None
    revoked_by: str | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    expired_at: datetime | None = None
    updated_at: datetime | None = None

    liid = property(lambda self: self.spec.liid)
    authority = property(lambda self: self.spec.authority)
    legal_reference = property(lambda self: self.spec.legal_reference)
    agency = property(lambda self: self.spec.agency)
    hi2 = property(lambda self: self.spec.hi2)
    hi3 = property(lambda self: self.spec.hi3)
    scope = property(lambda self: self.spec.scope)
    valid_from = property(lambda self: self.spec.valid_from)
    valid_until = property(lambda self: self.spec.valid_until)
    targets = property(lambda self: self.spec.targets)

    def is_effective(self, at: datetime) -> bool:
        """Approved, not revoked/expired, and ``valid_from <= at < valid_until``."""
        return self.state == "approved" and self.spec.valid_from <= at < self.spec.valid_until

    def status(self, at: datetime) -> str:
        """draft | approved (window not begun) | active | expired | revoked."""
        if self.state in TERMINAL or self.state == "draft":
            return "expired" if self.state == "draft" and at >= self.valid_until else self.state
        if at < self.valid_from:
            return "approved"
        return "active" if at < self.valid_until else "expired"

    def to_dict(self) -> dict[str, Any]:
        t = lambda dt: _iso(dt) if dt is not None else None  # noqa: E731
        return {**self.spec.to_dict(), "state": self.state, "created_by": self.created_by,
                "created_at": t(self.created_at), "modified_by": self.modified_by,
                "approved_by": self.approved_by, "approved_at": t(self.approved_at),
                "revoked_by": self.revoked_by, "revoked_at": t(self.revoked_at),
                "revoke_reason": self.revoke_reason, "expired_at": t(self.expired_at)}


# --------------------------------------------------------------------------- tables


class WarrantRow(Base):
    __tablename__ = "warrants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    liid: Mapped[str] = mapped_column(String(25), unique=True)
    authority: Mapped[str] = mapped_column(String(200))
    legal_reference: Mapped[str] = mapped_column(String(500))
    agency: Mapped[str] = mapped_column(String(200))
    hi2: Mapped[str] = mapped_column(String(300))
    hi3: Mapped[str | None] = mapped_column(String(300), nullable=True)
    scope: Mapped[str] = mapped_column(String(8))
    valid_from: Mapped[datetime] = mapped_column(DateTime)
    valid_until: Mapped[datetime] = mapped_column(DateTime, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    modified_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    approved_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    targets: Mapped[list[TargetRow]] = relationship(
        back_populates="warrant", cascade="all, delete-orphan", lazy="selectin", order_by="TargetRow.id")


class TargetRow(Base):
    __tablename__ = "warrant_targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    warrant_id: Mapped[int] = mapped_column(ForeignKey("warrants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(300))
    warrant: Mapped[WarrantRow] = relationship(back_populates="targets")

    __table_args__ = (
        UniqueConstraint("warrant_id", "kind", "value", name="uq_warrant_target"),
        Index("ix_warrant_targets_kind_value", "kind", "value"),
    )


def _spec_of(row: WarrantRow) -> WarrantSpec:
    return WarrantSpec(
        liid=row.liid, authority=row.authority, legal_reference=row.legal_reference, agency=row.agency,
        hi2=row.hi2, hi3=row.hi3, scope=row.scope, valid_from=from_db_time(row.valid_from),  # type: ignore[arg-type]
        valid_until=from_db_time(row.valid_until),  # type: ignore[arg-type]
        targets=tuple(Target(t.kind, t.value) for t in row.targets))


def _snapshot(row: WarrantRow) -> Warrant:
    return Warrant(
        spec=_spec_of(row), state=row.state, created_by=row.created_by,
        created_at=from_db_time(row.created_at),  # type: ignore[arg-type]
        modified_by=row.modified_by, approved_by=row.approved_by, approved_at=from_db_time(row.approved_at),
        revoked_by=row.revoked_by, revoked_at=from_db_time(row.revoked_at), revoke_reason=row.revoke_reason,
        expired_at=from_db_time(row.expired_at), updated_at=from_db_time(row.updated_at))


def _apply_spec(row: WarrantRow, spec: WarrantSpec) -> None:
    row.authority, row.legal_reference, row.agency = spec.authority, spec.legal_reference, spec.agency
    row.hi2, row.hi3, row.scope = spec.hi2, spec.hi3, spec.scope
    row.valid_from, row.valid_until = to_db_time(spec.valid_from), to_db_time(spec.valid_until)
    wanted = {(t.kind, t.value) for t in spec.targets}
    row.targets = [t for t in row.targets if (t.kind, t.value) in wanted]
    have = {(t.kind, t.value) for t in row.targets}
    for t in spec.targets:
        if (t.kind, t.value) not in have:
            row.targets.append(TargetRow(kind=t.kind, value=t.value))


def _same_person(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().casefold() == b.strip().casefold()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- store


class WarrantStore:
    """Warrants in a database (SQLite by default, any SQLAlchemy URL), every change audited."""

    def __init__(self, target: str | Engine | None = None, *, clock: Callable[[], datetime] | None = None,
                 key_file: Path | None = None, anchor_file: Path | None = None) -> None:
        self.engine = get_engine(target)
        self.clock = clock or _utcnow
        self.audit = AuditLog(self.engine, key_file=key_file, anchor_file=anchor_file, clock=self.clock)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def _tx(self) -> Iterator[tuple[Session, AuditLog]]:
        session = self._sessions()
        try:
            yield session, self.audit.in_session(session)
            session.commit()
        except LawtapError:
            session.rollback()
            raise
        except SQLAlchemyError as e:
            session.rollback()
            raise LawtapError(f"warrant database error: {str(getattr(e, 'orig', e)).splitlines()[0]}") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise LawtapError("the store clock must return aware (UTC) datetimes")
        return now.astimezone(timezone.utc)

    def _expire_due(self, session: Session, audit: AuditLog, now: datetime) -> builtins.list[str]:
        """Mark drafts/approvals whose window has ended as expired, each with an audit entry."""
        rows = session.scalars(
            select(WarrantRow).where(WarrantRow.state.in_(("draft", "approved")),
                                     WarrantRow.valid_until <= to_db_time(now))
            .order_by(WarrantRow.id).with_for_update()).all()
        for row in rows:
            previous = row.state
            row.state, row.expired_at, row.updated_at = "expired", to_db_time(now), to_db_time(now)
            audit.append(SYSTEM_ACTOR, "expire", row.liid, previous_state=previous,
                         valid_until=_iso(from_db_time(row.valid_until)))  # type: ignore[arg-type]
        if rows:
            session.flush()
        return [r.liid for r in rows]

    def _row(self, session: Session, liid: str, *, lock: bool = False) -> WarrantRow:
        q = select(WarrantRow).where(WarrantRow.liid == str(liid).strip())
        row = session.scalars(q.with_for_update() if lock else q).first()
        if row is None:
            raise LawtapError(f"no warrant with LIID {str(liid).strip()!r}")
        return row

    def _refuse(self, user: str, action: str, liid: str, reason: str) -> None:
        """Record a refused request in its own transaction, then raise it as the error."""
        with self._tx() as (_session, audit):
            audit.append(user, "denied", liid, attempted=action, reason=reason)
        raise LawtapError(reason)

    @staticmethod
    def _user(user: Any) -> str:
        return _clean_text("user", user)

    # -- commands

    def expire_due(self) -> builtins.list[str]:
        """Expire every warrant whose window has ended now; returns their LIIDs."""
        with self._tx() as (session, audit):
            return self._expire_due(session, audit, self._now())

    def create(self, spec: WarrantSpec, user: str) -> Warrant:
        """Store a new draft; the window must not be over already."""
        user = self._user(user)
        now = self._now()
        if spec.valid_until <= now:
            raise LawtapError(f"warrant {spec.liid}: its window ended at {_iso(spec.valid_until)}")
        with self._tx() as (session, audit):
            self._expire_due(session, audit, now)
            exists = LawtapError(f"a warrant with LIID {spec.liid!r} already exists")
            if session.scalars(select(WarrantRow.id).where(WarrantRow.liid == spec.liid)).first():
                raise exists
            row = WarrantRow(liid=spec.liid, state="draft", created_by=user, created_at=to_db_time(now),
                             updated_at=to_db_time(now))
            _apply_spec(row, spec)
            try:
                with session.begin_nested():
                    session.add(row)
            except IntegrityError:
                raise exists from None  # a concurrent create won the race
            audit.append(user, "create", spec.liid, **spec.to_dict())
            return _snapshot(row)

    def create_from_yaml(self, source: str | bytes | Path, user: str) -> Warrant:
        return self.create(load_warrant_yaml(source), user)

    def approve(self, liid: str, user: str) -> Warrant:
        """Approve a draft. The creator (and the last modifier) cannot approve it."""
        user = self._user(user)
        refusal: str | None = None
        with self._tx() as (session, audit):
            now = self._now()
            self._expire_due(session, audit, now)
            row = self._row(session, liid, lock=True)
            if row.state != "draft":
                refusal = f"warrant {row.liid} is {row.state}; only a draft can be approved"
            elif _same_person(user, row.created_by):
                refusal = (f"warrant {row.liid} was created by {row.created_by}; "
                           f"approval must come from a second person")
            elif _same_person(user, row.modified_by):
                refusal = (f"warrant {row.liid} was last modified by {row.modified_by}; "
                           f"approval must come from a second person")
            else:
                row.state, row.approved_by, row.approved_at = "approved", user, to_db_time(now)
                row.updated_at = to_db_time(now)
                spec = _spec_of(row)
                audit.append(user, "approve", row.liid, created_by=row.created_by,
                             effective_from=_iso(max(now, spec.valid_from)), valid_until=_iso(spec.valid_until))
                return _snapshot(row)
        self._refuse(user, "approve", str(liid).strip(), refusal)
        raise AssertionError("unreachable")

    def revoke(self, liid: str, user: str, reason: str) -> Warrant:
        """Revoke a draft or an approved warrant (terminal). A reason is required."""
        user = self._user(user)
        reason = _clean_text("reason", reason, 1000)
        refusal: str | None = None
        with self._tx() as (session, audit):
            now = self._now()
            self._expire_due(session, audit, now)
            row = self._row(session, liid, lock=True)
            if row.state in TERMINAL:
                refusal = f"warrant {row.liid} is already {row.state}"
            else:
                previous = row.state
                row.state, row.revoked_by, row.revoked_at = "revoked", user, to_db_time(now)
                row.revoke_reason, row.updated_at = reason, to_db_time(now)
                audit.append(user, "revoke", row.liid, reason=reason, previous_state=previous)
                return _snapshot(row)
        self._refuse(user, "revoke", str(liid).strip(), refusal)
        raise AssertionError("unreachable")

    def modify(self, spec: WarrantSpec, user: str) -> Warrant:
        """Replace the definition of a non-terminal warrant; it returns to draft for re-approval."""
        user = self._user(user)
        refusal: str | None = None
        with self._tx() as (session, audit):
            now = self._now()
            self._expire_due(session, audit, now)
            row = self._row(session, spec.liid, lock=True)
            if row.state in TERMINAL:
                refusal = f"warrant {row.liid} is {row.state}; it cannot be modified"
            elif spec.valid_until <= now:
                refusal = f"warrant {row.liid}: the new window ended at {_iso(spec.valid_until)}"
            else:
                before = _spec_of(row).to_dict()
                after = spec.to_dict()
                changed = sorted(k for k in after if before.get(k) != after[k])
                was_approved = row.state == "approved"
                _apply_spec(row, spec)
                row.state, row.modified_by, row.updated_at = "draft", user, to_db_time(now)
                row.approved_by = row.approved_at = None
                audit.append(user, "modify", row.liid, **after, changed=changed,
                             reapproval_required=was_approved)
                session.flush()
                return _snapshot(row)
        self._refuse(user, "modify", spec.liid, refusal)
        raise AssertionError("unreachable")

    # -- queries

    def get(self, liid: str) -> Warrant:
        """The warrant (no audit entry: for machines; people use :meth:`view`)."""
        with self._tx() as (session, audit):
            self._expire_due(session, audit, self._now())
            return _snapshot(self._row(session, liid))

    def view(self, liid: str, user: str) -> Warrant:
        """The warrant, recording that ``user`` looked at it (targets are sensitive)."""
        user = self._user(user)
        with self._tx() as (session, audit):
            self._expire_due(session, audit, self._now())
            row = self._row(session, liid)
            audit.append(user, "view", row.liid, what="warrant")
            return _snapshot(row)

    def list(self, state: str | None = None) -> builtins.list[Warrant]:
        """All warrants (oldest first); ``state`` filters by stored state or ``active``."""
        if state is not None and state not in (*STATES, "active"):
            raise LawtapError(f"state {state!r}: must be one of {', '.join((*STATES, 'active'))}")
        with self._tx() as (session, audit):
            now = self._now()
            self._expire_due(session, audit, now)
            q = select(WarrantRow).order_by(WarrantRow.created_at, WarrantRow.id)
            if state is not None:
                q = q.where(WarrantRow.state == ("approved" if state == "active" else state))
            out = [_snapshot(r) for r in session.scalars(q)]
        return [w for w in out if w.is_effective(now)] if state == "active" else out

    def effective_warrants(self, at: datetime | None = None) -> builtins.list[Warrant]:
        """Warrants effective at ``at`` (default now): approved and ``valid_from <= at < valid_until``.

        Expiry is observed (and audited) against the real clock first, so a warrant whose window
        has ended is never returned, whatever ``at`` says.
        """
        return self._approved_overlapping(at, None)

    def target_set(self, at: datetime | None = None, horizon: timedelta | None = None) -> TargetSet:
        """Snapshot for the collector: warrants effective at ``at`` or starting within ``horizon``.

        Each :class:`Tap` still checks its own window per packet, so a horizon lets a collector
        start intercepting at ``valid_from`` exactly without reloading at that instant.
        """
        at = self._now() if at is None else at
        return TargetSet(self._approved_overlapping(at, horizon), at)

    def _approved_overlapping(self, at: datetime | None, horizon: timedelta | None) -> builtins.list[Warrant]:
        with self._tx() as (session, audit):
            now = self._now()
            self._expire_due(session, audit, now)
            at = now if at is None else at
            if at.tzinfo is None:
                raise LawtapError("effective_warrants needs an aware (UTC) datetime")
            lo = to_db_time(at)
            hi = to_db_time(at + horizon) if horizon else lo
            q = (select(WarrantRow)
                 .where(WarrantRow.state == "approved", WarrantRow.valid_from <= hi, WarrantRow.valid_until > lo)
                 .order_by(WarrantRow.id))
            return [_snapshot(r) for r in session.scalars(q)]


def default_user() -> str:
    """The OS login name, for commands where ``--user`` is optional."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --------------------------------------------------------------------------- matching


def _epoch(t: datetime | float | int) -> float:
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise LawtapError("packet time as datetime must be aware (UTC)")
        return t.timestamp()
    return float(t)


@dataclass(frozen=True, slots=True)
class Tap:
    """One warrant's authority over a target: intercept for ``liid`` while ``start <= t < end``."""

    liid: str
    start: float
    end: float
    cc: bool

    def active(self, t: datetime | float) -> bool:
        ts = _epoch(t)
        return self.start <= ts < self.end

    @property
    def scope(self) -> str:
        return "iri+cc" if self.cc else "iri"

    @property
    def valid_from(self) -> datetime:
        return datetime.fromtimestamp(self.start, timezone.utc)

    @property
    def valid_until(self) -> datetime:
        return datetime.fromtimestamp(self.end, timezone.utc)


_EMPTY: tuple[Tap, ...] = ()


def _uniq(groups: Iterable[tuple[Tap, ...]], t: float) -> tuple[Tap, ...]:
    """The taps active at ``t``, each once, in order (one warrant may match via two targets)."""
    out: list[Tap] = []
    for group in groups:
        for tap in group:
            if tap.start <= t < tap.end and all(tap is not o for o in out):
                out.append(tap)
    return tuple(out)


class TargetSet:
    """Immutable lookup tables from target identities to :class:`Tap` objects.

    Addresses and prefixes share one structure per IP version: for each prefix length present,
    a dict from the masked address (as int) to the taps, so a lookup costs one shift and one
    dict probe per distinct prefix length. Identity kinds are dicts from the normal form.
    Every ``match*`` method takes the packet time and returns only taps whose window holds it.
    """

    __slots__ = ("at", "warrants", "_v4", "_v6", "_ids", "_networks", "_frozen")

    def __init__(self, warrants: Iterable[Warrant], at: datetime) -> None:
        self.at = at
        self.warrants: tuple[Warrant, ...] = tuple(warrants)
        v4: dict[int, dict[int, list[Tap]]] = {}
        v6: dict[int, dict[int, list[Tap]]] = {}
        ids: dict[str, dict[str, list[Tap]]] = {}
        nets: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
        for w in self.warrants:
            tap = Tap(w.liid, w.valid_from.timestamp(), w.valid_until.timestamp(), w.spec.includes_cc)
            for t in w.targets:
                if t.kind in ("ipv4", "ipv6", "prefix"):
                    net = ipaddress.ip_network(t.value)
                    nets.add(net)
                    table, bits = (v4, 32) if net.version == 4 else (v6, 128)
                    shift = bits - net.prefixlen
                    table.setdefault(shift, {}).setdefault(int(net.network_address) >> shift, []).append(tap)
                else:
                    key = t.value[:14] if t.kind == "imei" else t.value
                    ids.setdefault(t.kind, {}).setdefault(key, []).append(tap)
        freeze = lambda d: MappingProxyType({k: tuple(v) for k, v in d.items()})  # noqa: E731
        self._v4 = tuple(sorted((s, freeze(d)) for s, d in v4.items()))
        self._v6 = tuple(sorted((s, freeze(d)) for s, d in v6.items()))
        self._ids = MappingProxyType({k: freeze(d) for k, d in ids.items()})
        self._networks = tuple(sorted(nets, key=lambda n: (n.version, n.network_address, n.prefixlen)))
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("TargetSet is immutable")
        object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.warrants)

    def __bool__(self) -> bool:
        return bool(self.warrants)

    @property
    def liids(self) -> frozenset[str]:
        return frozenset(w.liid for w in self.warrants)

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """Every targeted address/prefix as a network (e.g. to prefilter a capture)."""
        return self._networks

    @property
    def refresh_by(self) -> float | None:
        """Epoch seconds of the earliest window end: reload the set before then."""
        return min((w.valid_until.timestamp() for w in self.warrants), default=None)

    def match_ipv4(self, addr: int, t: datetime | float) -> tuple[Tap, ...]:
        """Taps for an IPv4 address given as int (the collector's fast path)."""
        return self._match_int(self._v4, addr, t)

    def match_ipv6(self, addr: int, t: datetime | float) -> tuple[Tap, ...]:
        """Taps for an IPv6 address given as int."""
        return self._match_int(self._v6, addr, t)

    @staticmethod
    def _match_int(tables: tuple[tuple[int, Mapping[int, tuple[Tap, ...]]], ...], addr: int,
                   t: datetime | float) -> tuple[Tap, ...]:
        hit: tuple[Tap, ...] | None = None
        for shift, table in tables:
            group = table.get(addr >> shift)
            if group is not None:
                hit = group if hit is None else hit + group
        if hit is None:
            return _EMPTY
        ts = _epoch(t)
        if len(hit) == 1:
            return hit if hit[0].start <= ts < hit[0].end else _EMPTY
        return _uniq((hit,), ts)

    def match_ip(self, addr: Any, t: datetime | float) -> tuple[Tap, ...]:
        """Taps for an address (text, packed 4/16 bytes, int, or ipaddress object) at ``t``."""
        try:
            if isinstance(addr, (bytes, bytearray, memoryview)):
                b = bytes(addr)
                if len(b) not in (4, 16):
                    return _EMPTY
                ip: Any = ipaddress.ip_address(b)
            elif isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                ip = addr
            else:
                ip = ipaddress.ip_address(addr.strip() if isinstance(addr, str) else addr)
        except (ValueError, TypeError):
            return _EMPTY
        n = int(ip)
        return self.match_ipv4(n, t) if ip.version == 4 else self.match_ipv6(n, t)

    def match(self, kind: str, value: Any, t: datetime | float) -> tuple[Tap, ...]:
        """Taps for an observed identity of ``kind``; unparseable observations match nothing."""
        if kind in ("ipv4", "ipv6", "prefix"):
            return self.match_ip(value, t)
        table = self._ids.get(kind)
        if table is None:
            return _EMPTY
        try:
            key = normalize_target(kind, value)
        except LawtapError:
            return _EMPTY
        if kind == "imei":
            key = key[:14]
        return _uniq((table.get(key, _EMPTY),), _epoch(t))

    def match_phone(self, number: Any, t: datetime | float) -> tuple[Tap, ...]:
        """A telephone number matches both ``e164`` and ``msisdn`` targets (same number space)."""
        ts = _epoch(t)
        return _uniq((self.match("e164", number, ts), self.match("msisdn", number, ts)), ts)

    def __repr__(self) -> str:
        return f"TargetSet({len(self.warrants)} warrants, {len(self._networks)} networks, at={_iso(self.at)})"


def spec_with(spec: WarrantSpec, **changes: Any) -> WarrantSpec:
    """A copy of ``spec`` with fields replaced (validated again)."""
    return replace(spec, **changes)
