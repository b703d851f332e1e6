"""The X1 service: HTTPS with mutual TLS, dispatch of X1 requests to a backend, audit hook.

Two layers, so that the protocol can be tested without sockets:

* :class:`X1Service` turns one request body (bytes) into one response body. It never raises:
  whatever arrives is answered with an X1 document, and every message is reported to the
  ``on_request`` audit hook with its outcome.
* :class:`X1Server` is the transport: stdlib ``ThreadingHTTPServer`` behind TLS that requires
  a client certificate issued by the configured CA. The TLS handshake runs in the
  connection's worker thread (not in ``accept``), so a client that stalls its handshake
  cannot block other ADMFs.

The ADMF is identified by its certificate's subject commonName. By default a message's
``admfIdentifier`` must equal it, so one ADMF cannot act in another's name; and its
``neIdentifier`` must name this NE.

An X1 task created here is *not* an active interception: the backend (the warrant store)
records it awaiting a second person's approval in lawtap. That is why ActivateTask and
ModifyTask are answered ``Acknowledged`` rather than ``AcknowledgedAndCompleted``.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, Self

from lawtap.errors import LawtapError
from lawtap.x1.messages import (
    SUPPORTED_REQUESTS,
    Addressing,
    ErrorCode,
    Node,
    X1DocumentError,
    X1Error,
    X1Message,
    X1Task,
    error_response,
    ok_response,
    parse_document,
    response_document,
    task_details_response,
    top_level_error_document,
    xml_safe,
)

log = logging.getLogger("lawtap.x1")

UNKNOWN = "unknown"
#: ``message_type`` given to the audit hook when a document could not be split into messages.
UNKNOWN_MESSAGE = "Unknown"
CONTENT_TYPE = "application/xml; charset=utf-8"


class X1Backend(Protocol):
    """Where X1 operations land (the warrant store). Refuse with :class:`X1Error`.

    ``activate`` raises X1Error(XID_ALREADY_EXISTS) for a known XID; ``modify`` and
    ``deactivate`` raise X1Error(XID_NOT_FOUND) for an unknown one. Any other LawtapError
    becomes a generic ErrorResponse carrying its message.
    """

    def activate(self, task: X1Task, admf_id: str) -> None: ...

    def modify(self, task: X1Task, admf_id: str) -> None: ...

    def deactivate(self, xid: str, admf_id: str) -> None: ...

    def details(self, xid: str) -> X1Task | None: ...


#: ``on_request(admf_id, message_type, xid, ok, error)``, called once per request message after
#: it was handled (also for refused ones). ``admf_id`` is the certificate identity whenever the
#: message's own admfIdentifier could not be trusted; ``message_type`` is a RequestMessageType
#: value or ``"Unknown"``.
AuditHook = Callable[[str, str, str | None, bool, str | None], None]


@dataclass(frozen=True)
class X1Reply:
    """An HTTP answer: status and X1 document."""

    status: int
    body: bytes


class X1Service:
    """X1 request bytes in, X1 response bytes out; transport-independent."""

    def __init__(
        self,
        backend: X1Backend,
        ne_id: str,
        on_request: AuditHook | None = None,
        bind_admf_to_peer: bool = True,
    ) -> None:
        self.backend = backend
        self.ne_id = ne_id
        self.on_request = on_request
        self.bind_admf_to_peer = bind_admf_to_peer

    # -- entry point

    def handle(self, body: bytes, peer_id: str | None) -> X1Reply:
        """Answer one X1Request document sent by the ADMF authenticated as ``peer_id``.

        An exception of the audit hook is not swallowed into a normal answer: processing
        stops and the ADMF gets a 500 top-level error, because an unaudited success must
        not look like a success.
        """
        try:
            try:
                messages = parse_document(body)
            except X1DocumentError as exc:
                return self._refuse_document(exc, peer_id)
            nodes = [self._dispatch(m, peer_id) for m in messages]
            return X1Reply(200, response_document(nodes))
        except _AuditFailed as exc:
            log.error("X1 audit hook failed, request processing stopped: %s", exc.__cause__)
            return X1Reply(500, top_level_error_document(peer_id or UNKNOWN, self.ne_id, "audit failure"))
        except Exception:  # the ADMF gets an answer, the log gets the traceback
            log.exception("X1 request handling failed")
            self._audit_quietly(peer_id or UNKNOWN, UNKNOWN_MESSAGE, None, False, "internal error")
            return X1Reply(500, top_level_error_document(peer_id or UNKNOWN, self.ne_id, "internal error"))

    # -- refusals of a whole document

    def _refuse_document(self, exc: X1DocumentError, peer_id: str | None) -> X1Reply:
        text = exc.text
        if exc.stubs is None:
            self._audit(peer_id or UNKNOWN, UNKNOWN_MESSAGE, None, False, text)
            return X1Reply(400, top_level_error_document(peer_id or UNKNOWN, self.ne_id, text))
        nodes: list[Node] = []
        for stub in exc.stubs:
            assert stub.message_type is not None  # stubs are only given when all types are known
            admf = stub.admf_id if stub.admf_id is not None else (peer_id or UNKNOWN)
            trusted = not self.bind_admf_to_peer or (peer_id is not None and admf == peer_id)
            self._audit(admf if trusted else (peer_id or UNKNOWN), stub.message_type, stub.xid, False, text)
            to = Addressing(admf, self.ne_id, stub.transaction_id or "")
            nodes.append(error_response(stub.message_type, to, ErrorCode.REQUEST_SYNTAX_ERROR, text))
        return X1Reply(200, response_document(nodes))

    # -- one message of a valid document

    def _dispatch(self, msg: X1Message, peer_id: str | None) -> Node:
        to = Addressing.of(msg.envelope, self.ne_id)
        admf = msg.envelope.admf_id
        audit_id = admf
        try:
            if self.bind_admf_to_peer and admf != peer_id:
                audit_id = peer_id or UNKNOWN
                raise X1Error(
                    ErrorCode.GENERIC_ERROR,
                    f"admfIdentifier {admf!r} does not match the client certificate ({peer_id!r})"
                    if peer_id
                    else "no authenticated ADMF identity",
                )
            if msg.envelope.ne_id != self.ne_id:
                raise X1Error(
                    ErrorCode.GENERIC_ERROR,
                    f"neIdentifier {msg.envelope.ne_id!r} is not this NE ({self.ne_id!r})",
                )
            if msg.problem is not None:
                raise msg.problem
            node = self._execute(msg, to, admf)
        except X1Error as exc:
            self._audit(audit_id, msg.message_type, msg.xid, False, exc.description)
            return error_response(msg.message_type, to, exc.code, exc.description)
        except LawtapError as exc:
            self._audit(audit_id, msg.message_type, msg.xid, False, str(exc))
            return error_response(msg.message_type, to, ErrorCode.GENERIC_ERROR, str(exc))
        except Exception:  # a backend bug must not leak to the ADMF
            log.exception("X1 backend failed on %s %s", msg.message_type, msg.xid)
            self._audit(audit_id, msg.message_type, msg.xid, False, "internal error")
            return error_response(msg.message_type, to, ErrorCode.GENERIC_ERROR, "internal error")
        self._audit(audit_id, msg.message_type, msg.xid, True, None)
        return node

    def _execute(self, msg: X1Message, to: Addressing, admf: str) -> Node:
        kind = msg.message_type
        if kind not in SUPPORTED_REQUESTS:
            raise X1Error(ErrorCode.GENERIC_ERROR, f"{kind} is not supported by lawtap")
        if kind == "ActivateTask" or kind == "ModifyTask":
            task = msg.task
            assert task is not None
            if task.liid is None:
                raise X1Error(
                    ErrorCode.GENERIC_ERROR,
                    f"task {task.xid} has no LIID (listOfMediationDetails/mediationDetails/LIID); "
                    "lawtap warrants are identified by their LIID",
                )
            if kind == "ActivateTask":
                self.backend.activate(task, admf)
            else:
                self.backend.modify(task, admf)
            return ok_response(kind, to, "Acknowledged")
        if kind == "DeactivateTask":
            assert msg.xid is not None
            self.backend.deactivate(msg.xid, admf)
            return ok_response(kind, to)
        if kind == "GetTaskDetails":
            assert msg.xid is not None
            found = self.backend.details(msg.xid)
            if found is None:
                raise X1Error(ErrorCode.XID_NOT_FOUND, f"unknown XID {msg.xid}")
            return task_details_response(to, found)
        return ok_response(kind, to)  # Ping, Keepalive

    # -- audit

    def _audit(self, admf: str, message_type: str, xid: str | None, ok: bool, error: str | None) -> None:
        if self.on_request is None:
            return
        try:
            self.on_request(admf, message_type, xid, ok, None if error is None else xml_safe(error))
        except Exception as exc:  # whatever the hook raised, processing must stop
            raise _AuditFailed() from exc

    def _audit_quietly(self, *args: Any) -> None:
        try:
            self._audit(*args)
        except _AuditFailed as exc:
            log.error("X1 audit hook failed: %s", exc.__cause__)


class _AuditFailed(Exception):
    """The audit hook raised; carried up to :meth:`X1Service.handle` to stop processing."""


# --------------------------------------------------------------------------- in-memory backend


class InMemoryBackend:
    """A dictionary of tasks with a call log, for tests and demonstrations. Thread-safe."""

    def __init__(self) -> None:
        self.tasks: dict[str, X1Task] = {}
        self.calls: list[tuple[str, str, str | None]] = []  # (operation, xid, admf_id)
        self._lock = threading.Lock()

    def activate(self, task: X1Task, admf_id: str) -> None:
        with self._lock:
            if task.xid in self.tasks:
                raise X1Error(ErrorCode.XID_ALREADY_EXISTS, f"XID {task.xid} already exists")
            self.tasks[task.xid] = task
            self.calls.append(("activate", task.xid, admf_id))

    def modify(self, task: X1Task, admf_id: str) -> None:
        with self._lock:
            if task.xid not in self.tasks:
                raise X1Error(ErrorCode.XID_NOT_FOUND, f"unknown XID {task.xid}")
            self.tasks[task.xid] = task
            self.calls.append(("modify", task.xid, admf_id))

    def deactivate(self, xid: str, admf_id: str) -> None:
        with self._lock:
            if self.tasks.pop(xid, None) is None:
                raise X1Error(ErrorCode.XID_NOT_FOUND, f"unknown XID {xid}")
            self.calls.append(("deactivate", xid, admf_id))

    def details(self, xid: str) -> X1Task | None:
        with self._lock:
            self.calls.append(("details", xid, None))
            return self.tasks.get(xid)


# --------------------------------------------------------------------------- HTTPS transport


def server_tls_context(
    cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path
) -> ssl.SSLContext:
    """TLS 1.2+ server context that requires a client certificate issued by ``client_ca_file``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise LawtapError(f"X1 server certificate {cert_file} / key {key_file}: {exc}") from exc
    try:
        ctx.load_verify_locations(cafile=str(client_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise LawtapError(f"X1 client CA {client_ca_file}: {exc}") from exc
    return ctx


def peer_common_name(cert: dict[str, Any] | None) -> str | None:
    """The subject commonName of a verified peer certificate (``SSLSocket.getpeercert()``)."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


RefusedHook = Callable[[str, str], None]


class _Handler(BaseHTTPRequestHandler):
    server: _TLSHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "lawtap-x1"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _plain_refusal(self, status: int, reason: str, extra: dict[str, str] | None = None) -> None:
        peer = peer_common_name(self.connection.getpeercert()) or UNKNOWN
        self.close_connection = True
        self._send(status, top_level_error_document(peer, self.server.service.ne_id, reason), extra)

    def do_POST(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._plain_refusal(411, "chunked bodies are not accepted; send Content-Length")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._plain_refusal(411, "Content-Length is required")
        if length < 0 or length > self.server.max_body:
            self._discard(length)
            return self._plain_refusal(413, f"request body over {self.server.max_body} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None
        peer = peer_common_name(self.connection.getpeercert())
        reply = self.server.service.handle(body, peer)
        self._send(reply.status, reply.body)
        return None

    def _discard(self, length: int) -> None:
        """Read and drop a moderately oversized body, so the client can read our 413.

        Closing with unread data makes TCP reset the connection, and the client would see a
        broken pipe instead of the answer; far larger bodies are not worth reading.
        """
        left = length if 0 < length <= 8 * self.server.max_body else 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)

    def _not_allowed(self) -> None:
        self._plain_refusal(405, "X1 requests are HTTP POSTs", {"Allow": "POST"})

    do_GET = do_PUT = do_DELETE = do_PATCH = _not_allowed


class _TLSHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        service: X1Service,
        tls: ssl.SSLContext,
        max_body: int,
        io_timeout: float,
        on_refused: RefusedHook | None,
    ) -> None:
        self.service = service
        self.tls = tls
        self.max_body = max_body
        self.io_timeout = io_timeout
        self.on_refused = on_refused
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the worker thread; a client without a valid certificate stops here."""
        peer = f"{client_address[0]}:{client_address[1]}"
        request.settimeout(self.io_timeout)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            log.warning("X1 TLS handshake with %s refused: %s", peer, reason)
            if self.on_refused is not None:
                try:
                    self.on_refused(peer, str(reason))
                except Exception:  # a failing hook must not kill the server
                    log.exception("X1 on_refused hook failed")
            return
        try:
            _Handler(conn, client_address, self)  # the socket keeps io_timeout set above
        except (OSError, ssl.SSLError) as exc:
            log.info("X1 connection from %s ended: %s", peer, exc)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("X1 connection from %s failed", client_address)


class X1Server:
    """The X1 HTTPS endpoint. ``start()`` serves in a background thread; ``stop()`` ends it.

    Binds ``host:port`` (port 0: an ephemeral port, see :attr:`address`).
    """

    def __init__(
        self,
        service: X1Service,
        tls: ssl.SSLContext,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body: int = 1 << 20,
        io_timeout: float = 10.0,
        on_refused: RefusedHook | None = None,
    ) -> None:
        if tls.verify_mode != ssl.CERT_REQUIRED:
            raise LawtapError("the X1 server requires client certificates (verify_mode CERT_REQUIRED)")
        try:
            self._httpd = _TLSHTTPServer((host, port), service, tls, max_body, io_timeout, on_refused)
        except OSError as exc:
            raise LawtapError(f"X1 server cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"https://{host}:{port}/X1/"

    def start(self) -> Self:
        """Serve in a background thread."""
        if self._thread is None:
            self._serving.set()  # before the thread runs, so that an early stop() still shuts down
            self._thread = threading.Thread(target=self.serve_forever, name="lawtap-x1", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another."""
        self._serving.set()
        try:
            self._httpd.serve_forever()
        finally:
            self._serving.clear()

    def stop(self) -> None:
        """Stop serving and close the listening socket (connections in progress finish)."""
        if self._serving.is_set():
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "AuditHook",
    "InMemoryBackend",
    "RefusedHook",
    "X1Backend",
    "X1Reply",
    "X1Server",
    "X1Service",
    "peer_common_name",
    "server_tls_context",
]
