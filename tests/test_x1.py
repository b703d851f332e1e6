"""ETSI X1 (TS 103 221-1): XSD validation, task mapping, responses, HTTPS with mutual TLS.

The server tests make their own CA, server and client certificates (``cryptography``), run the
server on 127.0.0.1 with an ephemeral port, and talk to it with urllib. The protocol tests call
:class:`X1Service` directly. Every response document is itself validated against the XSD.
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import xmlschema
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap.errors import LawtapError
from lawtap.x1 import (
    REQUEST_MESSAGE_TYPES,
    ErrorCode,
    InMemoryBackend,
    X1Server,
    X1Service,
    X1Task,
    check_document,
    load_schema,
    parse_document,
    server_tls_context,
    task_from_details,
    x1_target,
)
from lawtap.x1.messages import Addressing, response_document, task_details_response
from lawtap.x1.schema import (
    COMMON_NS,
    X1_NS,
    XSI_NS,
    locate_schema_files,
    shared_files,
    vendored_files,
)

REPO = Path(__file__).resolve().parents[1]
NE = "lawtap-ne-1"
ADMF = "admf1"
XID = "2b36a78b-1f6a-4b5e-9a41-7c3d2f0e9a01"
XID2 = "2b36a78b-1f6a-4b5e-9a41-7c3d2f0e9a02"
DID = "5e0c1d2a-3b4c-4d5e-8f90-a1b2c3d4e5f6"
TS = "2025-03-01T12:00:00.000000Z"

# --------------------------------------------------------------------------- request builders


def message(xsi_type: str, body: str = "", admf: str = ADMF, ne: str = NE, tid: str | None = None) -> str:
    tid = tid or str(uuid.uuid4())
    return (
        f'<x1RequestMessage xsi:type="{xsi_type}">'
        f"<admfIdentifier>{admf}</admfIdentifier><neIdentifier>{ne}</neIdentifier>"
        f"<messageTimestamp>{TS}</messageTimestamp><version>v1.22.1</version>"
        f"<x1TransactionId>{tid}</x1TransactionId>{body}</x1RequestMessage>"
    )


def document(*messages: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<X1Request xmlns="{X1_NS}" xmlns:xsi="{XSI_NS}" '
        f'xmlns:c="{COMMON_NS}">' + "".join(messages) + "</X1Request>"
    ).encode()


def details(
    xid: str = XID,
    targets: str | list[str] = "<sipUri>sip:alice@example.com</sipUri>",
    delivery: str = "X2andX3",
    mediation: str | None = "<LIID>LIID-0001</LIID><deliveryType>HI2andHI3</deliveryType>",
    extra: str = "",
) -> str:
    listed = [targets] if isinstance(targets, str) else targets
    idents = "".join(f"<targetIdentifier>{t}</targetIdentifier>" for t in listed)
    med = (
        f"<listOfMediationDetails><mediationDetails>{mediation}</mediationDetails></listOfMediationDetails>"
        if mediation
        else ""
    )
    return (
        f"<taskDetails><xId>{xid}</xId><targetIdentifiers>{idents}</targetIdentifiers>"
        f"<deliveryType>{delivery}</deliveryType><listOfDIDs><dId>{DID}</dId></listOfDIDs>{med}{extra}</taskDetails>"
    )


def activate(xid: str = XID, **kw: object) -> bytes:
    return document(message("ActivateTaskRequest", details(xid, **kw)))  # type: ignore[arg-type]


def simple(kind: str, xid: str = XID, **kw: str) -> bytes:
    return document(message(f"{kind}Request", f"<xId>{xid}</xId>", **kw))


# --------------------------------------------------------------------------- response readers


def responses(body: bytes) -> list[ET.Element]:
    """The response messages of a reply, after checking the reply is valid against the XSD."""
    checked = check_document(body, expect_root=None)
    assert checked.valid, (checked.issues, body[:2000])
    root = ET.fromstring(body)
    assert root.tag == f"{{{X1_NS}}}X1Response", root.tag
    return list(root)


def rtype(resp: ET.Element) -> str:
    return resp.get(f"{{{XSI_NS}}}type", "")


def field(resp: ET.Element, path: str) -> str:
    found = resp.find("/".join(f"{{{X1_NS}}}{p}" for p in path.split("/")))
    assert found is not None, path
    return found.text or ""


def service(backend: InMemoryBackend | None = None, audit: list | None = None) -> X1Service:
    hook = (lambda *a: audit.append(a)) if audit is not None else None
    return X1Service(backend or InMemoryBackend(), NE, on_request=hook)


# --------------------------------------------------------------------------- schema


def test_vendored_xsds_match_shared() -> None:
    shared = shared_files(REPO.parent / "shared")
    if not shared.x1.is_file():
        pytest.skip("../shared not present")
    vend = vendored_files()
    for a, b in ((shared.x1, vend.x1), (shared.common, vend.common), (shared.hashed_id, vend.hashed_id)):
        assert a.read_bytes() == b.read_bytes(), b.name
    licence = REPO.parent / "shared/standards/etsi/LICENSE-ETSI-schemas-definitions.txt"
    assert (vend.x1.parent / "LICENSE").read_bytes() == licence.read_bytes()


def test_vendored_schema_loads_without_shared(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    schema = load_schema(vendored_files())
    assert schema.version == "1.22.1" and schema.validity == "valid"
    monkeypatch.setenv("LAWTAP_SHARED", str(tmp_path))  # explicit but empty: a loud error
    with pytest.raises(LawtapError, match="LAWTAP_SHARED"):
        locate_schema_files()


def test_request_message_types_are_the_xsds() -> None:
    assert tuple(load_schema().types["RequestMessageType"].enumeration) == REQUEST_MESSAGE_TYPES


def test_defused_parsing_refuses_entities() -> None:
    doc = (
        b'<!DOCTYPE X1Request [<!ENTITY x "boom">]><X1Request xmlns="' + X1_NS.encode() + b'">&x;</X1Request>'
    )
    checked = check_document(doc)
    assert not checked.valid and "ntit" in str(checked.issues[0])


# --------------------------------------------------------------------------- parsing and mapping


MAPPING = [
    ("<ipv4Address>192.0.2.010</ipv4Address>", "ipv4", "192.0.2.10"),
    ("<ipv6Address>2001:0db8:0000:0000:0000:0000:0000:0001</ipv6Address>", "ipv6", "2001:db8::1"),
    ("<ipv4Cidr><c:IPv4CIDR>198.51.100.0/24</c:IPv4CIDR></ipv4Cidr>", "prefix", "198.51.100.0/24"),
    ("<ipv6Cidr>2001:0db8:0000:0000:0000:0000:0000:0000/32</ipv6Cidr>", "prefix", "2001:db8::/32"),
    ("<e164Number>441632960001</e164Number>", "e164", "441632960001"),
    ("<telUri>tel:+44-1632-960001</telUri>", "e164", "441632960001"),
    ("<gpsiMsisdn>447700900123</gpsiMsisdn>", "msisdn", "447700900123"),
    ("<imsi>234150999999999</imsi>", "imsi", "234150999999999"),
    ("<supiimsi>234150999999998</supiimsi>", "imsi", "234150999999998"),
    ("<imei>35209900176148</imei>", "imei", "35209900176148"),
    ("<peiImeiCheckDigit>352099001761481</peiImeiCheckDigit>", "imei", "352099001761481"),
    ("<emailAddress>bob@example.org</emailAddress>", "email", "bob@example.org"),
    ("<sipUri>sip:alice@example.com</sipUri>", "sip_uri", "sip:alice@example.com"),
    ("<impu>sip:+441632960002@ims.example.net</impu>", "sip_uri", "sip:+441632960002@ims.example.net"),
    ("<impu>tel:+441632960003</impu>", "e164", "441632960003"),
    ("<nai>carol@isp.example</nai>", "username", "carol@isp.example"),
    ("<impi>dave@ims.example.net</impi>", "username", "dave@ims.example.net"),
]


@pytest.mark.parametrize(("xml", "kind", "value"), MAPPING, ids=[m[1] + ":" + m[0][1:8] for m in MAPPING])
def test_target_identifier_mapping(xml: str, kind: str, value: str) -> None:
    (msg,) = parse_document(activate(targets=xml))
    assert msg.problem is None, msg.problem
    assert msg.task is not None
    (target,) = msg.task.targets
    assert (target.kind, target.value) == (kind, value)


def test_task_fields() -> None:
    med = (
        "<LIID>LIID-0001</LIID><deliveryType>HI2Only</deliveryType>"
        "<StartTime>2025-03-02T00:00:00.000000+01:00</StartTime><EndTime>2025-06-01T00:00:00.000000Z</EndTime>"
    )
    (msg,) = parse_document(activate(delivery="X2Only", mediation=med))
    task = msg.task
    assert task is not None and msg.message_type == "ActivateTask" and msg.xid == XID
    assert task.scope == "iri" and task.delivery_type == "X2Only"
    assert task.liid == "LIID-0001" and task.dids == (DID,)
    assert task.valid_from == dt.datetime(2025, 3, 1, 23, tzinfo=dt.UTC)
    assert task.valid_until == dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    assert task.provisioning_status == "awaitingProvisioning"
    assert msg.envelope.admf_id == ADMF and msg.envelope.ne_id == NE
    # No StartTime: the task is valid from the request's timestamp, open-ended.
    (msg,) = parse_document(activate())
    assert msg.task is not None and msg.task.scope == "iri+cc"
    assert msg.task.valid_from == dt.datetime(2025, 3, 1, 12, tzinfo=dt.UTC) and msg.task.valid_until is None


@pytest.mark.parametrize(
    ("kw", "code", "words"),
    [
        ({"targets": "<macAddress>00:11:22:33:44:55</macAddress>"}, ErrorCode.TARGET_NOT_SUPPORTED, "macAddress"),
        ({"targets": "<telUri>tel:1632960001;phone-context=example.com</telUri>"}, 401, "global number"),
        ({"targets": "<nai>   </nai>"}, ErrorCode.TARGET_NOT_SUPPORTED, "empty"),
        ({"targets": "<ipv4Cidr><c:IPv4CIDR>198.51.100.7/24</c:IPv4CIDR></ipv4Cidr>"}, 401, "198.51.100.0/24?"),
        ({"delivery": "X3Only"}, ErrorCode.DELIVERY_TYPE_NOT_SUPPORTED, "X3Only"),
        (
            {"mediation": "<LIID>L1</LIID><deliveryType>HI2Only</deliveryType>"
             "<StartTime>2025-03-02T00:00:00.000000Z</StartTime><EndTime>2025-03-01T00:00:00.000000Z</EndTime>"},
            ErrorCode.GENERIC_ERROR, "not after",
        ),
    ],
)  # fmt: skip
def test_tasks_lawtap_cannot_run_are_refused_per_message(kw: dict, code: int, words: str) -> None:
    backend, audit = InMemoryBackend(), []
    reply = service(backend, audit).handle(activate(**kw), ADMF)
    (resp,) = responses(reply.body)
    assert reply.status == 200 and rtype(resp) == "ErrorResponse"
    assert field(resp, "requestMessageType") == "ActivateTask"
    assert int(field(resp, "errorInformation/errorCode")) == code
    assert words in field(resp, "errorInformation/errorDescription")
    assert backend.calls == [] and audit == [(ADMF, "ActivateTask", XID, False, audit[0][4])]


def test_task_without_liid_is_refused() -> None:
    backend = InMemoryBackend()
    (resp,) = responses(service(backend).handle(activate(mediation=None), ADMF).body)
    assert rtype(resp) == "ErrorResponse" and "LIID" in field(resp, "errorInformation/errorDescription")
    assert backend.calls == []


def test_two_liids_are_refused() -> None:
    two = (
        "<LIID>L1</LIID><deliveryType>HI2Only</deliveryType></mediationDetails>"
        "<mediationDetails><LIID>L2</LIID><deliveryType>HI2Only</deliveryType>"
    )
    (msg,) = parse_document(activate(mediation=two))
    assert msg.problem is not None and "one LIID" in msg.problem.description


# --------------------------------------------------------------------------- responses


def _rich_task() -> X1Task:
    (msg,) = parse_document(
        activate(
            targets=[m[0] for m in MAPPING],
            mediation="<LIID>LIID-0001</LIID><deliveryType>HI2andHI3</deliveryType>"
            "<StartTime>2025-03-02T00:00:00.000000Z</StartTime>",
            extra="<correlationID>+0042</correlationID><implicitDeactivationAllowed>1</implicitDeactivationAllowed>"
            f"<productID>{XID2}</productID><listOfServiceTypes><serviceType>voice</serviceType>"
            "<serviceType>data</serviceType></listOfServiceTypes>",
        )
    )
    assert msg.task is not None
    return msg.task


def test_task_details_response_is_valid_and_round_trips() -> None:
    task = _rich_task()
    body = response_document([task_details_response(Addressing(ADMF, NE, str(uuid.uuid4())), task)])
    (resp,) = responses(body)
    again = task_from_details(
        resp.find(f"{{{X1_NS}}}taskResponseDetails/{{{X1_NS}}}taskDetails"), task.valid_from
    )
    assert again == task
    assert (task.correlation_id, task.implicit_deactivation_allowed, task.product_id) == (42, True, XID2)
    assert task.service_types == ("voice", "data") and len(task.targets) == len(MAPPING)


def test_x1_target_builds_valid_identifiers_for_every_kind() -> None:
    kinds = [
        ("ipv4", "192.0.2.1"), ("ipv6", "2001:db8::1"), ("prefix", "10.0.0.0/8"),
        ("prefix", "2001:db8::/32"), ("username", "u@example"), ("email", "a@example.org"),
        ("sip_uri", "sip:a@example.org"), ("e164", "441632960001"), ("imsi", "234150999999999"),
        ("msisdn", "447700900123"), ("imei", "35209900176148"), ("imei", "352099001761481"),
        ("imei", "3520990017614801"),
    ]  # fmt: skip
    task = X1Task(
        xid=XID, targets=tuple(x1_target(k, v) for k, v in kinds), delivery_type="X2Only", scope="iri",
        dids=(), liid="L", valid_from=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), provisioning_status="complete",
    )  # fmt: skip
    (resp,) = responses(response_document([task_details_response(Addressing(ADMF, NE), task)]))
    again = task_from_details(
        resp.find(f"{{{X1_NS}}}taskResponseDetails/{{{X1_NS}}}taskDetails"), task.valid_from
    )
    assert [(t.kind, t.value) for t in again.targets] == kinds


def test_xsd_violation_is_answered_with_xmlschemas_error_and_no_backend_call() -> None:
    bad = activate(targets="<sipUri>mailto:alice@example.com</sipUri>")
    expected = {e.reason for e in load_schema().iter_errors(xmlschema.XMLResource(io.BytesIO(bad)))}
    assert any("doesn't match any pattern" in r for r in expected)
    backend, audit = InMemoryBackend(), []
    reply = service(backend, audit).handle(bad, ADMF)
    (resp,) = responses(reply.body)
    assert rtype(resp) == "ErrorResponse" and field(resp, "requestMessageType") == "ActivateTask"
    assert int(field(resp, "errorInformation/errorCode")) == ErrorCode.REQUEST_SYNTAX_ERROR
    text = field(resp, "errorInformation/errorDescription")
    assert all(r in text for r in expected) and "/sipUri" in text
    assert backend.calls == []
    assert audit == [(ADMF, "ActivateTask", XID, False, audit[0][4])] and "pattern" in audit[0][4]


def test_one_invalid_message_rejects_the_whole_document() -> None:
    good = message("ActivateTaskRequest", details(XID))
    bad = message("DeactivateTaskRequest", "<xId>not-a-uuid</xId>")
    backend = InMemoryBackend()
    out = responses(service(backend).handle(document(good, bad), ADMF).body)
    assert [rtype(r) for r in out] == ["ErrorResponse", "ErrorResponse"]
    assert [field(r, "requestMessageType") for r in out] == ["ActivateTask", "DeactivateTask"]
    assert backend.calls == []


@pytest.mark.parametrize(
    "body",
    [b"", b"not xml", b"<a/>", document(), document(message("X1RequestMessage")),
     document(message("NoSuchRequest")), f'<X1Response xmlns="{X1_NS}"/>'.encode()],
    ids=["empty", "text", "foreign-root", "no-message", "untyped", "unknown-type", "response-root"],
)  # fmt: skip
def test_unaddressable_documents_get_a_top_level_error(body: bytes) -> None:
    audit: list = []
    reply = service(audit=audit).handle(body, ADMF)
    assert reply.status == 400
    checked = check_document(reply.body, expect_root="X1TopLevelErrorResponse")
    assert checked.valid, checked.issues
    assert b"<!-- " in reply.body  # the reason rides in a comment: the XSD has no field for it
    assert len(audit) == 1 and audit[0][1] == "Unknown" and audit[0][3] is False


def test_admf_identifier_must_match_certificate_and_ne_must_be_us() -> None:
    backend, audit = InMemoryBackend(), []
    svc = service(backend, audit)
    (resp,) = responses(svc.handle(activate(), "someone-else").body)
    assert "does not match the client certificate" in field(resp, "errorInformation/errorDescription")
    assert audit[-1][0] == "someone-else"  # the audit names the authenticated identity
    (resp,) = responses(svc.handle(document(message("PingRequest", ne="other-ne")), ADMF).body)
    assert "not this NE" in field(resp, "errorInformation/errorDescription")
    assert backend.calls == []


def test_unsupported_valid_request_is_refused() -> None:
    (resp,) = responses(service().handle(document(message("GetNEStatusRequest")), ADMF).body)
    assert field(resp, "requestMessageType") == "GetNEStatus"
    assert "not supported" in field(resp, "errorInformation/errorDescription")


def test_audit_failure_is_not_reported_as_success() -> None:
    def broken(*_: object) -> None:
        raise OSError("audit disk full")

    reply = X1Service(InMemoryBackend(), NE, on_request=broken).handle(document(message("PingRequest")), ADMF)
    assert reply.status == 500 and check_document(reply.body, expect_root="X1TopLevelErrorResponse").valid


# --------------------------------------------------------------------------- robustness (hypothesis)

VALID = document(
    message("ActivateTaskRequest", details(XID, targets=[m[0] for m in MAPPING[:6]])),
    message("GetTaskDetailsRequest", f"<xId>{XID}</xId>"),
)


def _answers_with_valid_x1(body: bytes, error_only: bool) -> None:
    backend = InMemoryBackend()
    reply = service(backend).handle(body, ADMF)
    checked = check_document(reply.body, expect_root=None)
    assert checked.valid, (checked.issues, reply.body[:1500])
    root = ET.fromstring(reply.body)
    if error_only:
        assert backend.calls == []
        if root.tag == f"{{{X1_NS}}}X1Response":
            assert all(rtype(r) == "ErrorResponse" for r in root)
        else:
            assert root.tag == f"{{{X1_NS}}}X1TopLevelErrorResponse"


_FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_get_an_error_response(data: bytes) -> None:
    _answers_with_valid_x1(data, error_only=True)


@_FUZZ
@given(st.integers(min_value=0, max_value=len(VALID) - 1))
def test_truncated_documents_get_an_error_response(cut: int) -> None:
    _answers_with_valid_x1(VALID[:cut], error_only=True)


@_FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_documents_never_crash(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for pos, byte in edits:
        data[pos] = byte
    _answers_with_valid_x1(bytes(data), error_only=False)


@_FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_hostile_text_in_fields_stays_valid_xml(text: str) -> None:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;")
    _answers_with_valid_x1(document(message("PingRequest", admf=escaped, tid=escaped)), error_only=False)
    _answers_with_valid_x1(activate(targets=f"<nai>{escaped}</nai>"), error_only=False)


# --------------------------------------------------------------------------- HTTPS with mutual TLS


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)  # type: ignore[list-item]
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    return builder.sign((issuer[1] if issuer else key), hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("x1pki")
    ca_key, rogue_key = _key(), _key()
    ca, rogue = _cert("lawtap test CA", ca_key, None), _cert("rogue CA", rogue_key, None)
    _write(d / "ca.pem", ca)
    for name, issuer, usage in [
        ("server", (ca, ca_key), ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", (ca, ca_key), ExtendedKeyUsageOID.CLIENT_AUTH),
        ("rogue", (rogue, rogue_key), ExtendedKeyUsageOID.CLIENT_AUTH),
    ]:
        key = _key()
        cn = "127.0.0.1" if name == "server" else ADMF
        _write(d / f"{name}.pem", _cert(cn, key, issuer, usage), key)
    return d


class Running:
    def __init__(self, server: X1Server, backend: InMemoryBackend, audit: list, refused: list) -> None:
        self.server, self.backend, self.audit, self.refused = server, backend, audit, refused


@pytest.fixture(scope="module")
def running(pki: Path):
    backend, audit, refused = InMemoryBackend(), [], []
    svc = X1Service(backend, NE, on_request=lambda *a: audit.append(a))
    tls = server_tls_context(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    server = X1Server(svc, tls, host="127.0.0.1", port=0, on_refused=lambda *a: refused.append(a))
    with server:
        yield Running(server, backend, audit, refused)


def _client(pki: Path, cert: str | None = "client") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return ctx


def post(url: str, body: bytes, ctx: ssl.SSLContext, method: str = "POST") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method)
    req.add_header("Content-Type", "application/xml")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_https_task_lifecycle(running: Running, pki: Path) -> None:
    ctx, url = _client(pki), running.server.url
    status, body = post(url, activate(), ctx)
    (resp,) = responses(body)
    assert status == 200 and rtype(resp) == "ActivateTaskResponse" and field(resp, "oK") == "Acknowledged"
    assert running.backend.calls[-1] == ("activate", XID, ADMF)
    task = running.backend.tasks[XID]
    assert task.liid == "LIID-0001" and [t.kind for t in task.targets] == ["sip_uri"]

    (resp,) = responses(post(url, simple("GetTaskDetails"), ctx)[1])
    assert rtype(resp) == "GetTaskDetailsResponse"
    assert field(resp, "taskResponseDetails/taskDetails/xId") == XID
    assert field(resp, "taskResponseDetails/taskStatus/provisioningStatus") == "awaitingProvisioning"

    modified = document(
        message("ModifyTaskRequest", details(XID, targets="<imsi>234150999999999</imsi>", delivery="X2Only"))
    )
    (resp,) = responses(post(url, modified, ctx)[1])
    assert rtype(resp) == "ModifyTaskResponse" and running.backend.calls[-1] == ("modify", XID, ADMF)
    assert running.backend.tasks[XID].scope == "iri"

    (resp,) = responses(post(url, simple("DeactivateTask"), ctx)[1])
    assert rtype(resp) == "DeactivateTaskResponse" and field(resp, "oK") == "AcknowledgedAndCompleted"
    assert running.backend.calls[-1] == ("deactivate", XID, ADMF)

    (resp,) = responses(post(url, simple("GetTaskDetails"), ctx)[1])
    assert rtype(resp) == "ErrorResponse"
    assert int(field(resp, "errorInformation/errorCode")) == ErrorCode.XID_NOT_FOUND

    (resp,) = responses(post(url, document(message("PingRequest")), ctx)[1])
    assert rtype(resp) == "PingResponse"
    assert [a[1:4] for a in running.audit[-6:]] == [
        ("ActivateTask", XID, True), ("GetTaskDetails", XID, True), ("ModifyTask", XID, True),
        ("DeactivateTask", XID, True), ("GetTaskDetails", XID, False), ("Ping", None, True),
    ]  # fmt: skip


def test_https_xsd_violation_rejected_without_backend_call(running: Running, pki: Path) -> None:
    before = list(running.backend.calls)
    status, body = post(running.server.url, activate(XID2, delivery="X4Only"), _client(pki))
    (resp,) = responses(body)
    assert status == 200 and rtype(resp) == "ErrorResponse"
    assert "value must be one of" in field(resp, "errorInformation/errorDescription")
    assert running.backend.calls == before and XID2 not in running.backend.tasks
    assert running.audit[-1][:4] == (ADMF, "ActivateTask", XID2, False)


def test_https_refuses_clients_without_a_trusted_certificate(running: Running, pki: Path) -> None:
    before = len(running.audit)
    for cert in (None, "rogue"):
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            post(running.server.url, activate(XID2), _client(pki, cert))
    assert len(running.audit) == before and XID2 not in running.backend.tasks
    deadline = time.monotonic() + 5  # the server thread reports after the client saw the failure
    while len(running.refused) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    reasons = " ".join(r[1] for r in running.refused)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reasons and "CERTIFICATE_VERIFY_FAILED" in reasons
    # A plain-TCP client that never speaks TLS is dropped too, without an HTTP answer.
    with socket.create_connection(running.server.address, timeout=5) as raw:
        raw.sendall(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        try:
            answer = raw.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert b"HTTP/1." not in answer


def test_https_transport_refusals(running: Running, pki: Path) -> None:
    ctx = _client(pki)
    status, body = post(running.server.url, b"", ctx, method="GET")
    assert status == 405 and check_document(body, expect_root="X1TopLevelErrorResponse").valid
    status, body = post(running.server.url, b"x" * ((1 << 20) + 1), ctx)
    assert status == 413
    status, body = post(running.server.url, b"\x00garbage", ctx)
    assert status == 400 and check_document(body, expect_root="X1TopLevelErrorResponse").valid


def test_server_refuses_a_context_without_client_verification(pki: Path) -> None:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(LawtapError, match="client certificates"):
        X1Server(service(), tls)
    with pytest.raises(LawtapError, match="client CA"):
        server_tls_context(pki / "server.pem", pki / "server.key", pki / "missing.pem")
