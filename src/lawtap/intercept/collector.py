"""The collector: takes only the traffic of active warrants' targets, drops everything else.

Per batch, after the decode and flow kernels:

1. identity signalling (RADIUS, DHCP, GTP-C) goes through its analyzers into the
   :class:`~lawtap.identity.IdentityResolver` — metadata only, kept in memory, never written;
2. candidate packets are found with numpy: an address in a target network, or an address the
   resolver says a username/IMSI/MSISDN/… target held during the batch;
3. each candidate is checked exactly, per packet, against the warrants' windows
   (:class:`~lawtap.intercept.warrants.TargetSet` and ``resolver.who(ip, ts)``) — a long flow
   is intercepted only for the part inside the window;
4. each hit becomes an :class:`Interception` (LIID, CIN = the flow, direction, the IP packet
   and whether content may be delivered); IRI begin/end events mark each intercepted flow.

Nothing about non-matching packets leaves this module: no records, no index, no counters per
flow — only totals.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
import numpy as np

from lawtap.decode import kernel as dk
from lawtap.decode.defrag import Defragmenter
from lawtap.flows.engine import FlowEngine
from lawtap.identity import IdentityResolver
from lawtap.intercept.warrants import Tap, TargetSet
from lawtap.pipeline import decode
from lawtap.sources.batch import PacketBatch

# Identity targets and the resolver attribute that names them.
IDENTITY_KINDS = {"username": "identity", "email": "identity", "imsi": "imsi", "msisdn": "msisdn",
                  "imei": "imei", "e164": "msisdn", "sip_uri": "identity"}
SIGNALLING = ("radius", "dhcp", "dhcpv6", "gtp-c")
# Services whose content names a target (e-mail addresses and logins, SIP URIs and numbers): their
# analyzers run, in memory only, so that a target's message or call can be recognised.
CONTENT_IDENTIFIED = ("smtp", "pop3", "imap", "sip")
SIGNALLING_PORTS = np.array([67, 68, 546, 547, 1645, 1646, 1812, 1813, 2123, 3386], dtype=np.int64)
_SIP_URI = re.compile(r"sips?:[^\s;>,]+", re.I)
_EMAIL_EVENT = {"smtp": "e-mail-send", "pop3": "e-mail-download", "imap": "e-mail-download"}
_EMAIL_PROTOCOL = {"smtp": "smtp", "pop3": "pop3", "imap": "imap4"}


@dataclass(frozen=True)
class Interception:
    """One event for the mediator: IRI (begin/continue/end) or CC (one IP packet)."""

    kind: str  # "cc" | "iri-begin" | "iri-end" | "email-iri" | "email-cc" | "ipmm-iri" | "ipmm-cc"
    liid: str
    cin: int  # communication identity: the flow
    ts_ns: int
    from_target: bool | None = None  # CC direction: True when the target sent the packet
    packet: bytes = b""  # CC: the IP packet; IRI: empty
    target_ip: str = ""
    identity: str = ""  # username/IMSI… the resolver attributed the address to, if any
    details: dict | None = None  # email-iri: protocol, sender, recipients…; ipmm-iri: src_ip, dst_ip


@dataclass
class CollectorStats:
    packets_seen: int = 0
    packets_intercepted: int = 0
    cc_packets: int = 0
    iri_events: int = 0
    dropped: int = 0
    per_liid: dict[str, int] = field(default_factory=dict)


def _v4_int(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    return v4, (lo & np.uint64(0xFFFFFFFF)).astype(np.int64)


class Collector:
    """Matches packets against a :class:`TargetSet`; emits :class:`Interception` s to a sink."""

    def __init__(self, targets: TargetSet, sink: Callable[[Interception], None], *,
                 resolver: IdentityResolver | None = None, salt: bytes = b"\0" * 32) -> None:
        self.targets = targets
        self.sink = sink
        self.resolver = resolver or IdentityResolver()
        self.engine = FlowEngine(salt, keep_records=False)  # no conn records: nothing is kept
        self.defrag = Defragmenter()
        self.stats = CollectorStats()
        self._open: dict[int, dict[str, str]] = {}  # cin (flow) -> {liid: target ip}: IRI begun
        self._flow_taps: dict[int, dict[str, Tap]] = {}  # flows identified by content (SIP)
        self._call_taps: dict[str, dict[str, Tap]] = {}  # target calls by Call-ID (their media)
        self._media: dict[int, dict[str, Tap]] = {}  # this batch's media endpoints of target calls
        self._ended: list[int] = []
        self._identity_targets = [(kind, value) for kind, value in self._identity_target_list()]
        self._v4_nets, self._v6_nets = self._networks()
        self._signalling = self._signalling_dispatcher()

    # ---- setup ----
    def _identity_target_list(self) -> Iterable[tuple[str, str]]:
        for w in self.targets.warrants:
            for t in w.spec.targets:
                if t.kind in IDENTITY_KINDS:
                    yield t.kind, t.value

    def _networks(self) -> tuple[list[tuple[int, int]], list[ipaddress.IPv6Network]]:
        v4, v6, hosts = [], [], []
        for net in self.targets.networks:
            if net.version == 4 and net.prefixlen == 32:
                hosts.append(int(net.network_address))
            elif net.version == 4:
                v4.append((int(net.network_address), int(net.netmask)))
            else:
                v6.append(net)
        self._v4_hosts = np.array(sorted(hosts), dtype=np.int64)
        return v4, v6

    def _signalling_dispatcher(self):
        from lawtap.analyzers import registry
        from lawtap.dpi import classify
        from lawtap.streams.dispatch import StreamDispatcher

        from functools import partial

        from lawtap.analyzers.calls import CallTracker

        self._content_mode = any(k in ("email", "sip_uri", "e164", "username") for k, _ in self._identity_targets)
        wanted = SIGNALLING + (CONTENT_IDENTIFIED if self._content_mode else ())
        reg = {k: v for k, v in registry().items() if k in wanted}
        # SDP in a target's call announces where its media will flow: the call tracker keeps
        # those bindings (in memory, no audio) so the RTP can be intercepted too.
        self.calls = CallTracker(write_wav=False)
        if "sip" in reg:
            reg["sip"] = partial(reg["sip"], tracker=self.calls)
        return StreamDispatcher(reg, classify, self.engine.uid)

    # ---- per batch ----
    def decode(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The decode stage alone (may run in a reader thread, ahead of :meth:`process`)."""
        return decode(batch, self.defrag) if len(batch) else None

    def process(self, batch: PacketBatch, decoded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        """Match one batch (``decoded``: what :meth:`decode` returned for it, if already run)."""
        n = len(batch)
        if n == 0:
            return
        # Fragments of a target's datagram are reassembled by the decode stage.
        data, A, D = decoded if decoded is not None else decode(batch, self.defrag)
        PF, _POF, PD, PS = self.engine.run(data, A, D, batch.ts)
        self.stats.packets_seen += n
        self._learn_identities(batch, data, A, D, PF, PD)
        cand = self._candidates(A, D, batch.ts, PF)
        hits = 0
        for i in cand.tolist():
            hits += self._check(batch, data, A, D, PF, PD, i)
        self.stats.dropped += n - hits
        self._end_flows(int(batch.ts[-1]))
        self.engine.take_records()  # flow records of the collector are not kept

    def finish(self, ts_ns: int) -> None:
        self.engine.finish()
        self._signalling.end_all(ts_ns / 1e9)
        self._drain_identities()
        for cin, taps in list(self._open.items()):
            for liid, ip in taps.items():
                self._emit(Interception("iri-end", liid, cin, ts_ns, target_ip=ip))
        self._open.clear()

    # ---- internals ----
    def _learn_identities(self, batch: PacketBatch, data: np.ndarray, A, D, PF, PD) -> None:
        if not self._content_mode:
            # Only address-assignment signalling is needed: keep Python (and DPI) away from every
            # other flow by passing only UDP packets on RADIUS, DHCP(v6) and GTP-C ports.
            udp = D[:, dk.C_PROTO] == 17
            on_port = np.isin(D[:, dk.C_SPORT], SIGNALLING_PORTS) | np.isin(D[:, dk.C_DPORT], SIGNALLING_PORTS)
            PF = np.where(udp & on_port, PF, -1)
        self._signalling.batch(data, A, D, batch.ts, PF, PD)
        ended, self.engine.ended_fids = self.engine.ended_fids, []
        if ended:
            self._signalling.end(ended, float(batch.ts[-1]) / 1e9)
            self._ended = ended
        else:
            self._ended = []
        self._drain_identities()

    def _drain_identities(self) -> None:
        records, files, _weirds = self._signalling.take()
        for _fid, _conn, fields in records.get("identity_event", []):
            self.resolver.add(fields)
        messages = {(fid, f.meta.get("email_index", f.meta.get("trans_depth"))): f for fid, _c, f in files
                    if f.mime_type == "message/rfc822"}
        for fid, conn, fields in records.get("email", []):
            self._email(fid, conn, fields, messages)
        for fid, conn, fields in records.get("sip", []):
            self._sip(fid, conn, fields)

    def _email(self, fid: int, conn, fields: dict, messages: dict) -> None:
        """A message (or a login) of a target: e-mail IRI, and the message itself as e-mail CC."""
        t = float(fields.get("ts") or 0)
        addrs = [fields.get("mailfrom"), fields.get("from"), *(fields.get("rcptto") or []), *(fields.get("to") or []),
                 *(fields.get("cc") or [])]
        taps: dict[str, Tap] = {}
        for a in addrs:
            for m in re.findall(r"[^\s<>,\"]+@[^\s<>,\"]+", a or ""):
                taps.update((tap.liid, tap) for tap in self.targets.match("email", m, t))
        if fields.get("user"):
            for kind in ("username", "email"):
                taps.update((tap.liid, tap) for tap in self.targets.match(kind, fields["user"], t))
        if not taps:
            return
        proto = fields.get("protocol") or "smtp"
        msg = messages.get((fid, fields.get("trans_depth")))
        if msg is None:
            candidates = [f for (ffid, _), f in messages.items() if ffid == fid]
            msg = candidates[0] if len(candidates) == 1 else None
        info = {"protocol": _EMAIL_PROTOCOL.get(proto, "undefined"), "event": _EMAIL_EVENT.get(proto, "e-mail-send"),
                "sender": fields.get("mailfrom") or fields.get("from"),
                "recipients": list(fields.get("rcptto") or fields.get("to") or []),
                "message_id": fields.get("message_id"), "client_ip": conn.orig_h, "server_ip": conn.resp_h,
                "client_port": conn.orig_p, "server_port": conn.resp_p}
        ts_ns = int(t * 1e9)
        for tap in taps.values():
            self._emit(Interception("email-iri", tap.liid, fid, ts_ns, details=info, identity=fields.get("user") or ""))
            if tap.cc and msg is not None:
                self._emit(Interception("email-cc", tap.liid, fid, ts_ns, packet=msg.data,
                                        from_target=bool(fields.get("is_orig", True))))
            self.stats.per_liid[tap.liid] = self.stats.per_liid.get(tap.liid, 0) + 1

    def _sip(self, fid: int, conn, fields: dict) -> None:
        """A target's SIP signalling: its flow is intercepted from here on (IRI begin + CC)."""
        t = float(fields.get("ts") or 0)
        taps: dict[str, Tap] = {}
        for key in ("request_from", "request_to", "response_from", "response_to", "uri"):
            for uri in _SIP_URI.findall(fields.get(key) or ""):
                taps.update((tap.liid, tap) for tap in self.targets.match("sip_uri", uri, t))
                user = uri.split(":", 1)[1].split("@", 1)[0]
                if user.lstrip("+").isdigit():
                    taps.update((tap.liid, tap) for tap in self.targets.match_phone(user, t))
        if taps:
            self._flow_taps.setdefault(fid, {}).update(taps)
            if fields.get("call_id"):
                self._call_taps.setdefault(fields["call_id"], {}).update(taps)

    def _candidates(self, A: np.ndarray, D: np.ndarray, ts: np.ndarray, PF: np.ndarray) -> np.ndarray:
        flow = (D[:, dk.C_STATUS] == dk.ST_FLOW) & (PF >= 0)
        hit = np.zeros(D.shape[0], dtype=np.bool_)
        sv4, src4 = _v4_int(A[:, 0], A[:, 1])
        dv4, dst4 = _v4_int(A[:, 2], A[:, 3])
        if self._v4_hosts.size:  # single addresses: one set lookup for all of them
            hit |= (sv4 & np.isin(src4, self._v4_hosts)) | (dv4 & np.isin(dst4, self._v4_hosts))
        for net, mask in self._v4_nets:
            hit |= (sv4 & ((src4 & mask) == net)) | (dv4 & ((dst4 & mask) == net))
        if self._v6_nets:
            for i in np.nonzero(flow & ~(sv4 & dv4))[0].tolist():
                for col in (0, 2):
                    addr = ipaddress.IPv6Address((int(A[i, col]) << 64) | int(A[i, col + 1]))
                    if any(addr in net for net in self._v6_nets):
                        hit[i] = True
        if self._identity_targets and len(ts):
            t0, t1 = float(ts.min()) / 1e9, float(ts.max()) / 1e9
            ips: set[int] = set()
            for kind, value in self._identity_targets:
                for t in (t0, t1):
                    for ip in self.resolver.addresses_of(IDENTITY_KINDS[kind], value, t):
                        try:
                            a = ipaddress.ip_address(ip)
                        except ValueError:
                            continue
                        if a.version == 4:
                            ips.add(int(a))
            if ips:
                arr = np.fromiter(ips, dtype=np.int64)
                hit |= (sv4 & np.isin(src4, arr)) | (dv4 & np.isin(dst4, arr))
        if self._flow_taps:
            hit |= np.isin(PF, np.fromiter(self._flow_taps, dtype=np.int64))
        teids = self._target_teids()
        if teids:
            # GTP-U: the tunnel (endpoint address, TEID) names the subscriber, whatever the inner
            # addresses are; the TEIDs come from the target's GTP-C sessions.
            gtp = D[:, dk.C_TUN_KIND] == dk.TUN_GTPV1
            ov4, odst4 = _v4_int(A[:, 6], A[:, 7])
            key = (odst4 << 32) | D[:, dk.C_GTP_TEID]
            hit |= gtp & ov4 & np.isin(key, np.fromiter(teids, dtype=np.int64))
        # Computed once per batch; _check looks packets up in it.
        self._media = media = self._media_endpoints()
        if media:
            key = np.fromiter(media, dtype=np.int64)
            udp = D[:, dk.C_PROTO] == 17
            skey = (src4 << 16) | D[:, dk.C_SPORT]
            dkey = (dst4 << 16) | D[:, dk.C_DPORT]
            hit |= udp & ((sv4 & np.isin(skey, key)) | (dv4 & np.isin(dkey, key)))
        return np.nonzero(hit & flow)[0]

    def _target_teids(self) -> set[int]:
        """(GTP-U endpoint IPv4 << 32 | TEID) of sessions held by a subscriber target."""
        keys: set[int] = set()
        if not any(k in ("imsi", "msisdn", "imei", "e164") for k, _ in self._identity_targets):
            return keys
        for ident in self.resolver.intervals():
            if not ident.teids or not self._identity_taps(ident, None):
                continue
            for ip, teid in ident.teids:
                try:
                    a = ipaddress.ip_address(ip)
                except ValueError:
                    continue
                if a.version == 4:
                    keys.add((int(a) << 32) | int(teid))
        return keys

    def _identity_taps(self, ident, t: float | None) -> tuple[tuple[Tap, ...], str]:
        """Warrants naming this identity (at ``t``; any time of their window when None)."""
        taps: tuple[Tap, ...] = ()
        who = ""
        for kind, attr in IDENTITY_KINDS.items():
            value = getattr(ident, attr, None)
            if value:
                found = self.targets.match(kind, value, t if t is not None else ident.ts_start)
                if found:
                    taps += tuple(found)
                    who = str(value)
        return taps, who

    def _media_endpoints(self) -> dict[int, dict[str, Tap]]:
        """(IPv4 << 16 | port) -> taps, for the media the target calls' SDP announced."""
        out: dict[int, dict[str, Tap]] = {}
        if not self._call_taps:
            return out
        for (ip, port), b in self.calls.bindings.items():
            taps = self._call_taps.get(b.call_id)
            if taps:
                try:
                    a = ipaddress.ip_address(ip)
                except ValueError:
                    continue
                if a.version == 4:
                    out[(int(a) << 16) | int(port)] = taps
        return out

    def _taps_for(self, ip: str, t: float) -> tuple[tuple[Tap, ...], str]:
        """Warrants covering ``ip`` at ``t``: directly, or through who held it then."""
        taps = tuple(self.targets.match_ip(ip, t))
        who = ""
        if self._identity_targets:
            ident = self.resolver.who(ip, t)
            if ident is not None:
                found, who = self._identity_taps(ident, t)
                taps += found
        return taps, who

    def _check(self, batch: PacketBatch, data: np.ndarray, A, D, PF, PD, i: int) -> int:
        t_ns = int(batch.ts[i])
        t = t_ns / 1e9
        fid = int(PF[i])
        src = _addr(int(A[i, 0]), int(A[i, 1]))
        dst = _addr(int(A[i, 2]), int(A[i, 3]))
        delivered = 0
        content_taps = dict(self._flow_taps.get(fid, {}))
        gtp_taps: tuple[Tap, ...] = ()
        if D[i, dk.C_TUN_KIND] == dk.TUN_GTPV1 and self._identity_targets and A[i, 6] == 0:
            ident = self.resolver.by_teid(_addr(int(A[i, 6]), int(A[i, 7])), int(D[i, dk.C_GTP_TEID]), t)
            if ident is not None:
                gtp_taps = self._identity_taps(ident, t)[0]
        if self._call_taps and int(D[i, dk.C_PROTO]) == 17:
            media = self._media
            for col, port_col in ((0, dk.C_SPORT), (2, dk.C_DPORT)):
                if A[i, col] == 0:
                    content_taps.update(media.get(((int(A[i, col + 1]) & 0xFFFFFFFF) << 16) | int(D[i, port_col]), {}))
        flow_taps = tuple(tap for tap in content_taps.values() if tap.start <= t < tap.end)
        for ip, from_target in ((src, True), (dst, False)):
            taps, who = self._taps_for(ip, t)
            if from_target:  # flows identified by content or by their GTP tunnel: once per packet
                extra = tuple(flow_taps) + gtp_taps
                taps += tuple(tp for tp in extra if tp.liid not in {x.liid for x in taps})
            for tap in taps:
                open_taps = self._open.setdefault(fid, {})
                if tap.liid not in open_taps:
                    open_taps[tap.liid] = ip
                    self._emit(Interception("iri-begin", tap.liid, fid, t_ns, target_ip=ip, identity=who))
                off = int(D[i, dk.C_L3_OFF])
                ln = min(int(D[i, dk.C_IP_LEN]), int(D[i, dk.C_L3_LEN]))
                if tap in flow_taps:
                    # A VoIP target (TS 102 232-5): SIP messages are IRI, media is IP multimedia CC.
                    poff, plen = int(D[i, dk.C_PAY_OFF]), int(D[i, dk.C_PAY_LEN])
                    payload = data[poff : poff + plen].tobytes()
                    if _is_sip(payload):
                        self._emit(Interception("ipmm-iri", tap.liid, fid, t_ns, packet=payload, target_ip=ip,
                                                details={"src_ip": src, "dst_ip": dst}))
                    elif tap.cc:
                        self._emit(Interception("ipmm-cc", tap.liid, fid, t_ns, from_target=from_target,
                                                packet=data[off : off + ln].tobytes(), target_ip=ip))
                elif tap.cc:
                    self._emit(Interception("cc", tap.liid, fid, t_ns, from_target=from_target,
                                            packet=data[off : off + ln].tobytes(), target_ip=ip, identity=who))
                self.stats.per_liid[tap.liid] = self.stats.per_liid.get(tap.liid, 0) + 1
                delivered = 1
        self.stats.packets_intercepted += delivered
        return delivered

    def _end_flows(self, ts_ns: int) -> None:
        for fid in self._ended:
            self._flow_taps.pop(fid, None)
            for liid, ip in self._open.pop(fid, {}).items():
                self._emit(Interception("iri-end", liid, fid, ts_ns, target_ip=ip))

    def _emit(self, ev: Interception) -> None:
        if ev.kind in ("cc", "email-cc", "ipmm-cc"):
            self.stats.cc_packets += 1
        else:
            self.stats.iri_events += 1
        self.sink(ev)


_SIP_START = re.compile(rb"^(?:[A-Z]+ \S+ SIP/2\.0\r?\n|SIP/2\.0 \d{3} )")


def _is_sip(payload: bytes) -> bool:
    return bool(_SIP_START.match(payload[:256]))


def _addr(hi: int, lo: int) -> str:
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def intercept_capture(paths: list[str], targets: TargetSet, sink: Callable[[Interception], None]) -> CollectorStats:
    """Run the collector over capture files (merged in time order)."""
    from lawtap.pipeline import read_ahead
    from lawtap.sources import open_capture

    sources = [open_capture(p, file_id=k) for k, p in enumerate(paths)]
    col = Collector(targets, sink)
    last = 0
    for batch, decoded in read_ahead(sources, col):  # read and decode in a thread, one batch ahead
        col.process(batch, decoded)
        if len(batch):
            last = max(last, int(batch.ts.max()))
    col.finish(last)
    return col.stats

