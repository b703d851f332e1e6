"""X1 requests as typed values, and the X1 response documents lawtap answers with.

An ``X1Request`` document (TS 103 221-1) holds one or more ``x1RequestMessage`` elements whose
``xsi:type`` names the operation. :func:`parse_document` validates the whole document against
the XSD first and reads nothing from an invalid one: a provisioning interface for lawful
interception must not act on half-understood input, so one invalid message rejects the
document (every message is answered with an ``ErrorResponse`` carrying the XSD's error text).

A valid ``TaskDetails`` becomes an :class:`X1Task` in lawtap's own terms: each X1 target
identifier is mapped to a lawtap target kind (:data:`TARGET_KIND_OF`), ``deliveryType`` to a
scope (``X2Only`` -> IRI only, ``X2andX3`` -> IRI+CC), the LIID and validity window are taken
from ``listOfMediationDetails``. Identifier types lawtap cannot intercept on, and ``X3Only``
(lawtap never delivers content without its IRI), are refused per message with an error response
rather than silently narrowed.

Responses are built here as text with fixed namespace prefixes, and every one of them is valid
against the same XSD (the tests validate each kind, including those answering fuzzed input).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Literal
from xml.etree.ElementTree import Element

from lawtap.errors import LawtapError
from lawtap.x1.schema import COMMON_NS, X1_NS, X1_VERSION, XSI_NS, check_document

TargetKind = Literal[
    "ipv4", "ipv6", "prefix", "username", "email", "sip_uri", "e164", "imsi", "msisdn", "imei"
]
Scope = Literal["iri", "iri+cc"]
SCOPE_IRI_ONLY: Scope = "iri"
SCOPE_IRI_CC: Scope = "iri+cc"
ProvisioningStatus = Literal["awaitingProvisioning", "failed", "complete"]
OkValue = Literal["AcknowledgedAndCompleted", "Acknowledged"]

#: The ``RequestMessageType`` enumeration of the XSD (the tests compare it with the schema).
REQUEST_MESSAGE_TYPES: tuple[str, ...] = (
    "ActivateTask", "ModifyTask", "DeactivateTask", "DeactivateAllTasks", "GetTaskDetails",
    "CreateDestination", "ModifyDestination", "RemoveDestination", "RemoveAllDestinations",
    "GetDestinationDetails", "GetNEStatus", "GetAllDetails", "GetAllTaskDetails",
    "GetAllDestinationDetails", "GetAllGenericObjectDetails", "ListAllDetails",
    "ReportTaskIssue", "ReportDestinationIssue", "ReportNEIssue", "Ping", "Keepalive",
    "CreateObject", "ModifyObject", "GetObject", "DeleteObject", "ListObjectsOfType",
    "DeleteAllObjects", "ExtendedRequestMessageType",
)  # fmt: skip

#: The operations lawtap implements; any other valid request gets an ErrorResponse.
SUPPORTED_REQUESTS: tuple[str, ...] = (
    "ActivateTask", "ModifyTask", "DeactivateTask", "GetTaskDetails", "Ping", "Keepalive",
)  # fmt: skip

#: X1 target identifier element -> lawtap target kind. Everything else is refused.
TARGET_KIND_OF: dict[str, TargetKind] = {
    "ipv4Address": "ipv4",
    "ipv6Address": "ipv6",
    "ipv4Cidr": "prefix",
    "ipv6Cidr": "prefix",
    "e164Number": "e164",
    "telUri": "e164",  # global numbers only ("tel:+..."), see _target
    "gpsiMsisdn": "msisdn",
    "imsi": "imsi",
    "supiimsi": "imsi",
    "imei": "imei",
    "peiImei": "imei",
    "peiImeiCheckDigit": "imei",
    "peiImeisv": "imei",
    "emailAddress": "email",
    "internationalizedEmailAddress": "email",
    "sipUri": "sip_uri",
    "impu": "sip_uri",  # sip:/sips: IMPUs only; a tel: IMPU maps to e164
    "nai": "username",
    "impi": "username",
    "supinai": "username",
    "gpsiNai": "username",
}


class ErrorCode(IntEnum):
    """``errorCode`` values of lawtap's ErrorResponses.

    The values live in the prose of TS 103 221-1, not in the XSD; these follow a public X1
    implementation (endorses/lippycat) and are to be checked against the specification text.
    """

    GENERIC_ERROR = 100
    REQUEST_SYNTAX_ERROR = 101  # not well-formed or not valid against the XSD
    XID_ALREADY_EXISTS = 300
    XID_NOT_FOUND = 301
    DELIVERY_NOT_POSSIBLE = 400
    TARGET_NOT_SUPPORTED = 401
    DELIVERY_TYPE_NOT_SUPPORTED = 402


class X1Error(LawtapError):
    """A request lawtap answers with an X1 ``ErrorResponse`` (raised by parsing or a backend)."""

    def __init__(self, code: int, description: str) -> None:
        self.code = int(code)
        self.description = description
        super().__init__(f"X1 error {self.code}: {description}")


@dataclass(frozen=True)
class MessageStub:
    """What could be read of one message of an invalid document, to address its error response."""

    message_type: str | None  # a RequestMessageType value, None when unreadable
    admf_id: str | None
    transaction_id: str | None
    xid: str | None


class X1DocumentError(LawtapError):
    """The whole document is refused: not XML, not valid against the XSD, or not a request.

    ``stubs`` is set when every message's type is known, so that each can be answered with an
    ``ErrorResponse``; otherwise the answer is an ``X1TopLevelErrorResponse``.
    """

    def __init__(self, issues: Sequence[str], stubs: Sequence[MessageStub] | None) -> None:
        self.issues = tuple(issues)
        self.stubs = tuple(stubs) if stubs is not None else None
        super().__init__(self.text)

    @property
    def text(self) -> str:
        return "X1 request rejected: " + "; ".join(self.issues)


@dataclass(frozen=True)
class X1Target:
    """One target identifier: lawtap's kind and normalised value, and the X1 form it came in."""

    kind: TargetKind
    value: str
    x1_type: str
    x1_value: str


@dataclass(frozen=True)
class X1Mediation:
    """One ``mediationDetails`` entry: the LIID a task is delivered under, and when."""

    liid: str
    delivery_type: str  # HI2Only | HI3Only | HI2andHI3
    start: datetime | None = None
    end: datetime | None = None
    dids: tuple[str, ...] = ()


@dataclass(frozen=True)
class X1Task:
    """An X1 task in lawtap's terms.

    ``valid_from`` is the mediation ``StartTime`` or, when the ADMF gave none, the request's
    ``messageTimestamp`` (X1 tasks are effective once acknowledged); ``valid_until`` is the
    ``EndTime`` or ``None`` (until deactivated). ``provisioning_status`` is what
    GetTaskDetails reports: ``awaitingProvisioning`` until the task's warrant has its second
    approval in lawtap, ``complete`` after.
    """

    xid: str
    targets: tuple[X1Target, ...]
    delivery_type: str  # X2Only | X2andX3
    scope: Scope
    dids: tuple[str, ...]
    liid: str | None
    valid_from: datetime
    valid_until: datetime | None = None
    mediation: tuple[X1Mediation, ...] = ()
    dsids: tuple[str, ...] = ()
    correlation_id: int | None = None
    implicit_deactivation_allowed: bool | None = None
    product_id: str | None = None
    service_types: tuple[str, ...] = ()
    provisioning_status: ProvisioningStatus = "awaitingProvisioning"


@dataclass(frozen=True)
class Envelope:
    """The fields every X1 request message starts with (whitespace-collapsed as xs:token)."""

    admf_id: str
    ne_id: str
    timestamp: str
    version: str
    transaction_id: str


@dataclass(frozen=True)
class X1Message:
    """One request message of a valid document.

    ``task`` is set for ActivateTask/ModifyTask, ``xid`` whenever the message names a task.
    ``problem`` is a per-message refusal found while reading (an unsupported identifier, a
    bad validity window...): the message is answered with that error and not executed.
    """

    message_type: str
    envelope: Envelope
    xid: str | None = None
    task: X1Task | None = None
    problem: X1Error | None = field(default=None, compare=False)


# --------------------------------------------------------------------------- reading


def _q(local: str, ns: str = X1_NS) -> str:
    return f"{{{ns}}}{local}"


_XSI_TYPE = _q("type", XSI_NS)
_UUID = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}")
_TEL_GLOBAL = re.compile(r"tel:\+([0-9().\-]+)(;.*)?")


def _token(text: str | None) -> str:
    """xs:token's value space: whitespace collapsed."""
    return " ".join((text or "").split())


def _child(elem: Element, local: str, ns: str = X1_NS) -> Element | None:
    return elem.find(_q(local, ns))


def _children(elem: Element | None, local: str, ns: str = X1_NS) -> list[Element]:
    return [] if elem is None else elem.findall(_q(local, ns))


def _child_text(elem: Element, local: str) -> str | None:
    child = _child(elem, local)
    return None if child is None else _token(child.text)


def _message_type(msg: Element) -> str | None:
    """The RequestMessageType of a message from its ``xsi:type`` (``FooRequest`` -> ``Foo``).

    The prefix is dropped: once the document is valid, every type derived from
    X1RequestMessage is in the X1 namespace, and before that only a hint is needed.
    """
    xsi_type = _token(msg.get(_XSI_TYPE))
    local = xsi_type.rpartition(":")[2]
    if local.endswith("Request"):
        name = local[: -len("Request")]
        if name in REQUEST_MESSAGE_TYPES:
            return name
    return None


def _message_xid(msg: Element) -> str | None:
    xid = _child(msg, "xId")
    if xid is None:
        details = _child(msg, "taskDetails")
        xid = None if details is None else _child(details, "xId")
    value = None if xid is None else _token(xid.text)
    return value if value and _UUID.fullmatch(value) else None


def _salvage(msg: Element) -> MessageStub:
    """Best-effort addressing data from a message that may be invalid."""
    admf = _child_text(msg, "admfIdentifier")
    tid = _child_text(msg, "x1TransactionId")
    return MessageStub(
        message_type=_message_type(msg),
        admf_id=admf[:255] if admf else None,
        transaction_id=tid if tid and _UUID.fullmatch(tid) else None,
        xid=_message_xid(msg),
    )


def parse_time(text: str) -> datetime:
    """An X1 ``QualifiedMicrosecondDateTime`` as an aware datetime.

    XSD dateTime admits values Python cannot hold (year 0000, hour 24); those are refused.
    """
    try:
        value = datetime.fromisoformat(_token(text))
    except ValueError:
        raise X1Error(ErrorCode.REQUEST_SYNTAX_ERROR, f"unsupported timestamp {text!r}") from None
    if value.tzinfo is None:
        raise X1Error(ErrorCode.REQUEST_SYNTAX_ERROR, f"timestamp {text!r} has no time zone")
    return value


def _ipv4(text: str) -> str:
    # The TS 103 280 pattern admits leading zeros ("010"); they are decimal, not octal.
    return ".".join(str(int(part)) for part in text.split("."))


def _network(x1_type: str, text: str) -> str:
    """A CIDR as a network; host bits set are refused, as lawtap's warrant store does."""
    address, _, length = text.partition("/")
    address = _ipv4(address) if "." in address else address
    try:
        return str(ipaddress.ip_network(f"{address}/{length}", strict=True))
    except ValueError:
        wide = ipaddress.ip_network(f"{address}/{length}", strict=False)
        raise X1Error(
            ErrorCode.TARGET_NOT_SUPPORTED, f"{x1_type} {text}: host bits set; did you mean {wide}?"
        ) from None


def _target(ident: Element) -> X1Target:
    """One ``targetIdentifier`` choice as a lawtap target, or X1Error(TARGET_NOT_SUPPORTED)."""
    choice = ident[0]
    x1_type = choice.tag.rpartition("}")[2]
    kind = TARGET_KIND_OF.get(x1_type)
    if kind is None:
        raise X1Error(
            ErrorCode.TARGET_NOT_SUPPORTED,
            f"target identifier type {x1_type} is not supported by lawtap "
            f"(supported: {', '.join(TARGET_KIND_OF)})",
        )
    if x1_type == "ipv4Cidr":  # etsi103280:IPCIDR, a choice of IPv4CIDR | IPv6CIDR
        raw = _token(choice[0].text)
    elif x1_type in ("nai", "impi", "supinai", "gpsiNai"):  # xs:string: keep inner spaces
        raw = (choice.text or "").strip()
    else:
        raw = _token(choice.text)
    if not raw:
        raise X1Error(ErrorCode.TARGET_NOT_SUPPORTED, f"empty {x1_type} target identifier")
    value = raw
    if kind == "ipv4":
        value = _ipv4(raw)
    elif kind == "ipv6":
        value = ipaddress.IPv6Address(raw).compressed
    elif kind == "prefix":
        value = _network(x1_type, raw)
    elif x1_type in ("telUri", "impu") and raw.lower().startswith("tel:"):
        match = _TEL_GLOBAL.fullmatch(raw)
        if match is None:
            raise X1Error(
                ErrorCode.TARGET_NOT_SUPPORTED,
                f"{x1_type} {raw!r} is not a global number (tel:+<digits>)",
            )
        kind, value = "e164", re.sub(r"[().\-]", "", match.group(1))
        if not value.isdigit() or len(value) > 15:
            raise X1Error(ErrorCode.TARGET_NOT_SUPPORTED, f"{x1_type} {raw!r} is not an E.164 number")
    elif x1_type == "impu" and not raw.lower().startswith(("sip:", "sips:")):
        raise X1Error(ErrorCode.TARGET_NOT_SUPPORTED, f"impu {raw!r} is neither a sip: nor a tel: URI")
    return X1Target(kind=kind, value=value, x1_type=x1_type, x1_value=raw)


def _dids(elem: Element | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    dids = tuple(_token(e.text) for e in _children(elem, "dId"))
    dsids = tuple(_token(e.text) for e in _children(elem, "dSId"))
    return dids, dsids


def _mediation(elem: Element) -> X1Mediation:
    start = _child_text(elem, "StartTime")
    end = _child_text(elem, "EndTime")
    return X1Mediation(
        liid=(_child(elem, "LIID").text or "").strip(),  # type: ignore[union-attr]  # XSD: required
        delivery_type=_child_text(elem, "deliveryType") or "",
        start=parse_time(start) if start else None,
        end=parse_time(end) if end else None,
        dids=_dids(_child(elem, "listOfDIDs"))[0],
    )


def task_from_details(details: Element, implicit_start: datetime) -> X1Task:
    """A valid ``TaskDetails`` element as an :class:`X1Task`; X1Error when lawtap cannot run it."""
    xid = _child_text(details, "xId") or ""
    delivery = _child_text(details, "deliveryType") or ""
    if delivery == "X2Only":
        scope: Scope = SCOPE_IRI_ONLY
    elif delivery == "X2andX3":
        scope = SCOPE_IRI_CC
    else:
        raise X1Error(
            ErrorCode.DELIVERY_TYPE_NOT_SUPPORTED,
            f"deliveryType {delivery} is not supported: lawtap intercepts IRI only (X2Only) "
            "or IRI and content (X2andX3), never content without IRI",
        )
    targets = tuple(_target(t) for t in _children(_child(details, "targetIdentifiers"), "targetIdentifier"))
    dids, dsids = _dids(_child(details, "listOfDIDs"))
    mediation = tuple(
        _mediation(m) for m in _children(_child(details, "listOfMediationDetails"), "mediationDetails")
    )
    liids = sorted({m.liid for m in mediation})
    if len(liids) > 1:
        raise X1Error(
            ErrorCode.GENERIC_ERROR,
            f"task {xid} carries {len(liids)} different LIIDs ({', '.join(liids)}); "
            "a lawtap warrant has exactly one LIID",
        )
    # Several entries with one LIID: the union of their windows. A missing bound is open.
    starts = [m.start for m in mediation if m.start is not None]
    ends = [m.end for m in mediation if m.end is not None]
    valid_from = min(starts) if starts and len(starts) == len(mediation) else implicit_start
    valid_until = max(ends) if ends and len(ends) == len(mediation) else None
    if valid_until is not None and valid_until <= valid_from:
        raise X1Error(
            ErrorCode.GENERIC_ERROR,
            f"task {xid}: EndTime {valid_until.isoformat()} is not after its start {valid_from.isoformat()}",
        )
    correlation = _child_text(details, "correlationID")
    implicit = _child_text(details, "implicitDeactivationAllowed")
    return X1Task(
        xid=xid,
        targets=targets,
        delivery_type=delivery,
        scope=scope,
        dids=dids,
        dsids=dsids,
        liid=liids[0] if liids else None,
        valid_from=valid_from,
        valid_until=valid_until,
        mediation=mediation,
        correlation_id=int(correlation) if correlation else None,
        implicit_deactivation_allowed=None if implicit is None else implicit in ("true", "1"),
        product_id=_child_text(details, "productID"),
        service_types=tuple(
            _token(e.text) for e in _children(_child(details, "listOfServiceTypes"), "serviceType")
        ),
    )


def _read_message(msg: Element) -> X1Message:
    message_type = _message_type(msg)
    envelope = Envelope(
        admf_id=_child_text(msg, "admfIdentifier") or "",
        ne_id=_child_text(msg, "neIdentifier") or "",
        timestamp=_child_text(msg, "messageTimestamp") or "",
        version=_child_text(msg, "version") or "",
        transaction_id=_child_text(msg, "x1TransactionId") or "",
    )
    assert message_type is not None  # parse_document sends only typed messages here
    xid = _message_xid(msg)
    if message_type not in ("ActivateTask", "ModifyTask"):
        return X1Message(message_type, envelope, xid=xid)
    try:
        details = _child(msg, "taskDetails")
        assert details is not None  # required by the XSD
        task = task_from_details(details, parse_time(envelope.timestamp))
    except X1Error as problem:
        return X1Message(message_type, envelope, xid=xid, problem=problem)
    return X1Message(message_type, envelope, xid=xid, task=task)


def parse_document(data: bytes) -> list[X1Message]:
    """Validate an X1Request document and read its messages, in order.

    Raises :class:`X1DocumentError` when the document is refused as a whole. A message of a
    valid document that lawtap will not run carries its reason in ``problem``.
    """
    checked = check_document(data, expect_root="X1Request")
    root = checked.root
    messages = [] if root is None else _children(root, "x1RequestMessage")
    stubs: list[MessageStub] | None = [_salvage(m) for m in messages]
    if not stubs or any(s.message_type is None for s in stubs):
        stubs = None
    if not checked.valid:
        raise X1DocumentError([str(i) for i in checked.issues], stubs)
    if stubs is None:
        # Valid, yet a message has no (request) xsi:type: the XSD's base type is not abstract.
        raise X1DocumentError(
            ['an x1RequestMessage has no xsi:type naming a request (e.g. xsi:type="ActivateTaskRequest")'],
            None,
        )
    return [_read_message(m) for m in messages]


# --------------------------------------------------------------------------- writing

_PREFIX = {X1_NS: "", COMMON_NS: "etsi103280", XSI_NS: "xsi"}
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: errorDescription and similar free texts are cut here, so an answer stays small.
MAX_TEXT = 4000


def xml_safe(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` reduced to characters XML 1.0 can carry (others shown as ``\\xNN``) and cut."""
    text = _NOT_XML_CHAR.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _escape(text: str, attribute: bool = False) -> str:
    text = xml_safe(text, limit=1 << 30).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if attribute:
        text = text.replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    else:
        text = text.replace("\r", "&#13;")
    return text


@dataclass
class Node:
    """A response element: tag in ``{namespace}local`` form, text or children."""

    tag: str
    text: str | None = None
    children: list[Node] = field(default_factory=list)
    xsi_type: str | None = None

    def add(self, local: str, text: str | None = None, ns: str = X1_NS) -> Node:
        child = Node(_q(local, ns), text)
        self.children.append(child)
        return child


def _name(tag: str) -> str:
    ns, _, local = tag[1:].partition("}")
    prefix = _PREFIX[ns]
    return f"{prefix}:{local}" if prefix else local


def _write(node: Node, out: list[str], top: bool = False) -> None:
    name = _name(node.tag)
    attrs = ""
    if top:
        attrs = f' xmlns="{X1_NS}" xmlns:etsi103280="{COMMON_NS}" xmlns:xsi="{XSI_NS}"'
    if node.xsi_type:
        attrs += f' xsi:type="{_escape(node.xsi_type, attribute=True)}"'
    if node.children:
        out.append(f"<{name}{attrs}>")
        for child in node.children:
            _write(child, out)
        out.append(f"</{name}>")
    elif node.text:
        out.append(f"<{name}{attrs}>{_escape(node.text)}</{name}>")
    else:
        out.append(f"<{name}{attrs}/>")


def serialize(root: Node, comment: str | None = None) -> bytes:
    """A response document as UTF-8 bytes (an optional comment, made safe, before the root)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    if comment:
        safe = re.sub("-(?=-|$)", "- ", xml_safe(comment))  # "--" may not occur in a comment
        out.append(f"<!-- {safe} -->\n")
    _write(root, out, top=True)
    out.append("\n")
    return "".join(out).encode("utf-8")


def x1_time(value: datetime | None = None) -> str:
    """A QualifiedMicrosecondDateTime in UTC (now when ``value`` is None)."""
    value = (value or datetime.now(UTC)).astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


NIL_UUID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Addressing:
    """Whom a response message answers: the request's ADMF and transaction, and this NE."""

    admf_id: str
    ne_id: str
    transaction_id: str = NIL_UUID

    @classmethod
    def of(cls, envelope: Envelope, ne_id: str) -> Addressing:
        return cls(envelope.admf_id, ne_id, envelope.transaction_id)


def _response(xsi_type: str, to: Addressing) -> Node:
    node = Node(_q("x1ResponseMessage"), xsi_type=xsi_type)
    node.add("admfIdentifier", xml_safe(to.admf_id, 255))
    node.add("neIdentifier", xml_safe(to.ne_id, 255))
    node.add("messageTimestamp", x1_time())
    node.add("version", X1_VERSION)
    tid = to.transaction_id if _UUID.fullmatch(to.transaction_id) else NIL_UUID
    node.add("x1TransactionId", tid)
    return node


def ok_response(message_type: str, to: Addressing, ok: OkValue = "AcknowledgedAndCompleted") -> Node:
    """``<Type>Response`` with ``oK``: for ActivateTask, ModifyTask, DeactivateTask, Ping, Keepalive."""
    node = _response(f"{message_type}Response", to)
    node.add("oK", ok)
    return node


def error_response(message_type: str, to: Addressing, code: int, description: str) -> Node:
    """An ``ErrorResponse`` for one request message."""
    if message_type not in REQUEST_MESSAGE_TYPES:
        raise ValueError(f"not an X1 RequestMessageType: {message_type!r}")
    node = _response("ErrorResponse", to)
    node.add("requestMessageType", message_type)
    info = node.add("errorInformation")
    info.add("errorCode", str(int(code)))
    info.add("errorDescription", xml_safe(description) or "error")
    return node


def x1_target(kind: TargetKind, value: str) -> X1Target:
    """The X1 form of a lawtap target (for a task that was not created through X1)."""
    if kind == "ipv4":
        return X1Target(kind, value, "ipv4Address", value)
    if kind == "ipv6":
        return X1Target(kind, value, "ipv6Address", ipaddress.IPv6Address(value).exploded)
    if kind == "prefix":
        net = ipaddress.ip_network(value, strict=False)
        if net.version == 4:
            return X1Target(kind, value, "ipv4Cidr", str(net))
        return X1Target(kind, value, "ipv6Cidr", f"{net.network_address.exploded}/{net.prefixlen}")
    if kind == "imei":  # 14 digits; with check digit 15; IMEISV 16
        x1_type = {15: "peiImeiCheckDigit", 16: "peiImeisv"}.get(len(value), "imei")
        return X1Target(kind, value, x1_type, value)
    x1_type = {
        "e164": "e164Number", "msisdn": "gpsiMsisdn", "imsi": "imsi",
        "email": "emailAddress", "sip_uri": "sipUri", "username": "nai",
    }[kind]  # fmt: skip
    return X1Target(kind, value, x1_type, value)


def _task_details(parent: Node, task: X1Task) -> None:
    details = parent.add("taskDetails")
    details.add("xId", task.xid)
    idents = details.add("targetIdentifiers")
    for target in task.targets:
        choice = idents.add("targetIdentifier").add(target.x1_type)
        if target.x1_type == "ipv4Cidr":
            inner = "IPv6CIDR" if ":" in target.x1_value else "IPv4CIDR"
            choice.add(inner, target.x1_value, ns=COMMON_NS)
        else:
            choice.text = target.x1_value
    details.add("deliveryType", task.delivery_type)
    dids = details.add("listOfDIDs")
    for did in task.dids:
        dids.add("dId", did)
    for dsid in task.dsids:
        dids.add("dSId", dsid)
    if task.mediation:
        listing = details.add("listOfMediationDetails")
        for med in task.mediation:
            entry = listing.add("mediationDetails")
            entry.add("LIID", med.liid)
            entry.add("deliveryType", med.delivery_type)
            if med.start is not None:
                entry.add("StartTime", x1_time(med.start))
            if med.end is not None:
                entry.add("EndTime", x1_time(med.end))
            if med.dids:
                med_dids = entry.add("listOfDIDs")
                for did in med.dids:
                    med_dids.add("dId", did)
    if task.correlation_id is not None:
        details.add("correlationID", str(task.correlation_id))
    if task.implicit_deactivation_allowed is not None:
        details.add("implicitDeactivationAllowed", "true" if task.implicit_deactivation_allowed else "false")
    if task.product_id is not None:
        details.add("productID", task.product_id)
    if task.service_types:
        services = details.add("listOfServiceTypes")
        for service in task.service_types:
            services.add("serviceType", service)


def task_details_response(to: Addressing, task: X1Task) -> Node:
    """``GetTaskDetailsResponse``: the task as X1 TaskDetails plus its provisioning status."""
    node = _response("GetTaskDetailsResponse", to)
    details = node.add("taskResponseDetails")
    _task_details(details, task)
    status = details.add("taskStatus")
    status.add("provisioningStatus", task.provisioning_status)
    status.add("listOfFaults")
    return node


def response_document(messages: Iterable[Node]) -> bytes:
    """An ``X1Response`` holding one response message per request message, in order."""
    root = Node(_q("X1Response"), children=list(messages))
    if not root.children:
        raise ValueError("an X1Response needs at least one message")
    return serialize(root)


def top_level_error_document(admf_id: str, ne_id: str, description: str) -> bytes:
    """``X1TopLevelErrorResponse``, for a document whose messages cannot be answered one by one.

    The XSD gives this response no error field, so the reason travels in an XML comment.
    """
    root = Node(_q("X1TopLevelErrorResponse"))
    root.add("admfIdentifier", xml_safe(admf_id, 255))
    root.add("neIdentifier", xml_safe(ne_id, 255))
    root.add("messageTimestamp", x1_time())
    root.add("version", X1_VERSION)
    return serialize(root, comment=description)
