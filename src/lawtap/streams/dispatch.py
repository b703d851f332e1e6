"""From flows to application analyzers: picks an analyzer per connection and feeds it.

The flow kernel has already tagged every packet with its flow id (``PF``) and direction
(``PD``). This stage selects, with numpy, only the packets an analyzer may want (TCP/UDP with
payload, plus TCP SYN/FIN/RST for stream boundaries) of flows not already known to be of no
interest, and walks those in Python:

1. an undecided flow buffers its first payloads and asks DPI (``classify``) what it is;
2. once a service with a registered analyzer is named, the analyzer is created, the buffered
   packets are replayed and later ones streamed (TCP through the reassembler);
3. a flow whose service has no analyzer, or that stays unknown after a few payloads, is marked
   ignored, and its packets never reach Python again;
4. when the analyzer of a STARTTLS-capable protocol (SMTP, POP3, IMAP, XMPP, …) says it is
   ``done``, the rest of the TCP stream is sniffed once more and handed to the TLS analyzer if
   it is TLS; any other ``done`` (e.g. TLS after its handshake) ignores the flow for good.

Analyzer events are drained into per-type record rows and :class:`FileObject` s, tagged with
the flow id; the pipeline turns flow ids into uids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, FileObject, StreamAnalyzer
from lawtap.decode import kernel as dk
from lawtap.flows.engine import address_strings, address_text
from lawtap.flows.table import SERVICE_NAMES
from lawtap.streams.gather import flow_groups, gather_payloads
from lawtap.streams.reassembly import Data, Gap, TcpStream

# IN_LANE: analyzed by the lane's process; IN_DNS_SET: one of the UDP DNS flows of DnsFlows
UNDECIDED, ANALYZING, IGNORED, IN_LANE, IN_DNS_SET = 0, 1, 2, 3, 4
# With a lane (lawtap.streams.lane), each flow is analyzed by one of two processes. The lane owns
# every UDP flow but those the flow kernel names (DNS, which stays in the main process): it gets
# them from their first packet. It also owns the TCP flows the main process's DPI names as one of
# these services: SIP, so that signalling over TCP is in the same process as the RTP its SDP
# announces (the call tracker ties the two), and mail, which needs nothing from other flows.
# The main process also reads, decodes and runs the flow table; on a typical mix this split
# keeps both busy (DNS or TLS in the lane measured no faster).
LANE_TCP_SERVICES = frozenset({"sip", "smtp", "pop3", "imap"})
MAX_PENDING_PAYLOADS = 8  # payload packets kept while DPI decides
# Protocols that can hand their connection over to TLS (STARTTLS and friends): when their
# analyzer quits, the rest of the stream is offered to the TLS analyzer.
STARTTLS_SERVICES = frozenset({"smtp", "pop3", "imap", "xmpp", "ftp", "irc", "ldap", "nntp", "postgresql", "mysql"})
PENDING_BYTES = 2048  # bytes of each kept payload offered to DPI

Classifier = Callable[[str, int, int, list[bytes], list[bytes]], str]


@dataclass
class _Flow:
    conn: ConnInfo
    proto: int
    analyzer: StreamAnalyzer | None = None
    stream: TcpStream | None = None
    pending: list[tuple] = field(default_factory=list)  # (is_orig, seq, ack, flags, payload, ts)
    payloads: int = 0
    resniff: list[tuple] | None = None  # reassembled (is_orig, bytes, ts) after an analyzer quit
    resniffed: bool = False
    kernel_service: str = ""  # named by the flow kernel (DNS): DPI is not asked


_DEFAULT_DATAGRAM_BATCH = StreamAnalyzer.datagram_batch


class StreamDispatcher:
    """Owns the per-connection analyzers of a run."""

    def __init__(self, registry: dict[str, Callable[[ConnInfo], StreamAnalyzer]], classify: Classifier | None,
                 uid_of: Callable[[int], str], media_hint: Callable[[ConnInfo], str | None] | None = None,
                 uids_of: Callable[[np.ndarray], list[str]] | None = None, role: str | None = None) -> None:
        self.registry = registry
        self.classify = classify
        self.uid_of = uid_of
        self.uids_of = uids_of  # vectorized uid_of: the batch's new flows get their uids at once
        self._new_uids: dict[int, str] = {}
        self._new_addrs: dict[int, tuple[str, str]] = {}  # the batch's new flows: (src, dst) text
        self.media_hint = media_hint  # names the service of a UDP flow announced by signalling (SDP)
        self.state = np.zeros(1 << 16, dtype=np.int8)  # by flow id: UNDECIDED/ANALYZING/IGNORED
        self._slot = np.full(1 << 16, -1, dtype=np.int64)  # by flow id: scratch of _groups (-1)
        self.flows: dict[int, _Flow] = {}
        self.records: dict[str, list[tuple[int, ConnInfo, dict[str, Any]]]] = {}
        self.files: list[tuple[int, ConnInfo, FileObject]] = []
        self.weirds: list[tuple[int, str, str, float]] = []
        self.analyzed_packets = 0
        # Merged TCP runs are gathered here, one after the other. Nothing keeps a view of it:
        # analyzers are fed copies (_deliver), and the reassembler and DPI copy what they keep.
        self._gathered = np.empty(1 << 20, dtype=np.uint8)
        # Data connections announced by control connections (FTP PORT/PASV, IRC DCC, TFTP):
        # a new flow matching one goes straight to the channel's analyzer, without DPI.
        self.channels: list = []
        # fid -> DPI's answer, for conn.service (flows the flow kernel named have its name,
        # unless a data channel claimed them)
        self.services: dict[int, str] = {}
        # role "main": this process analyzes the flows but the lane's share (LANE_TCP_SERVICES),
        # and sets the share's rows aside; "lane": the lane's process, which analyzes every row
        # it is given; None: every flow. lane_owned marks, by flow id, the exceptions to "UDP
        # flows are the lane's" for conn_rows_owned: 1 the lane's TCP flows, 2 the UDP flows
        # the main process kept (the flow kernel named them, or a data channel claimed them).
        self.role = role
        self._kernel_codes = np.array(list(SERVICE_NAMES), dtype=np.int64)
        self.lane_owned = np.zeros(1 << 16, dtype=np.int8)
        # The main process's side of the lane's share (lawtap.streams.lane.Share), until taken:
        # the rows of the batch that are the lane's, and the TCP flows DPI handed over, each
        # with the packets kept while it decided.
        self._lane_rows: list[np.ndarray] = []
        self._handovers: list[tuple[int, ConnInfo, str, list[tuple]]] = []
        # UDP flows the flow kernel names DNS/mDNS, when the registry has the stock analyzers
        # for them: handled together by one DnsFlows (no analyzer object per flow).
        from lawtap.analyzers.dns import DNSAnalyzer, DnsFlows, MDNSAnalyzer

        stock = {"dns": DNSAnalyzer, "mdns": MDNSAnalyzer}
        self._dns_codes = np.array([code for code, name in SERVICE_NAMES.items()
                                    if name in stock and registry.get(name) is stock[name]], dtype=np.int64)
        self.dns_flows = DnsFlows(self._uids) if len(self._dns_codes) else None

    def conn_rows_owned(self, fids: np.ndarray, protos: np.ndarray) -> np.ndarray:
        """The main process, with a lane: which of these ended flows are its own (the conn rows
        of the others wait for the services the lane found)."""
        known = fids < self.lane_owned.shape[0]
        marks = np.zeros(fids.shape[0], dtype=np.int8)
        marks[known] = self.lane_owned[fids[known]]
        return ~((marks == 1) | ((protos == 17) & (marks != 2)))

    # ---- per batch ----
    def batch(self, data: np.ndarray, A: np.ndarray, D: np.ndarray, ts: np.ndarray, PF: np.ndarray, PD: np.ndarray,
              PS: np.ndarray | None = None) -> None:
        """Hand a decoded batch's payloads to the analyzers, flow by flow.

        Python work is per flow and per *run*, not per packet: the selected packets are grouped
        by flow (flows in the order of their first packet in the batch, so a control connection
        announcing a data channel, or SIP announcing RTP, is handled before the flow it
        announces), consecutive in-sequence TCP segments of one direction are merged into one
        segment (its payloads gathered by a kernel when it is fed), and an analyzed UDP flow gets all
        its datagrams of the batch in one :meth:`StreamAnalyzer.datagram_batch` call.
        ``PS`` carries the service the flow kernel already recognised (DNS), which spares DPI.
        """
        if not self.registry:
            return
        self._grow(int(PF.max(initial=-1)))
        proto = D[:, dk.C_PROTO]
        plen = D[:, dk.C_PAY_LEN]
        tcp = proto == 6
        wanted = (PF >= 0) & (tcp | (proto == 17)) & ((plen > 0) | (tcp & ((D[:, dk.C_FLAGS] & 0x07) != 0)))
        idx = np.nonzero(wanted)[0]
        if not len(idx):
            return
        idx = idx[self.state[PF[idx]] != IGNORED]
        if self.role == "main" and PS is not None and len(idx):
            idx = self._split_lane(A, D, PF, PD, PS, idx)
        if self.dns_flows is not None and PS is not None and len(idx):
            idx = self._split_dns(data, A, D, ts, PF, PD, PS, idx)
        if not len(idx):
            return
        self.analyzed_packets += len(idx)
        idx = idx[self._groups(PF[idx])[0]]
        n = len(idx)
        fid_a = PF[idx]
        dir_a = PD[idx]
        off_a = D[idx, dk.C_PAY_OFF]
        len_a = D[idx, dk.C_PAY_LEN]
        seq_a = D[idx, dk.C_SEQ]
        flag_a = D[idx, dk.C_FLAGS]
        time_a = ts[idx] / 1e9
        tcp_a = D[idx, dk.C_PROTO] == 6
        # Runs: consecutive TCP segments of one flow and direction, each starting where the
        # previous ended, without SYN/FIN/RST, become one segment.
        plain = tcp_a & (len_a > 0) & ((flag_a & 0x07) == 0)
        joins = np.zeros(n, dtype=np.bool_)
        joins[1:] = (plain[1:] & plain[:-1] & (fid_a[1:] == fid_a[:-1]) & (dir_a[1:] == dir_a[:-1])
                     & (seq_a[1:] == ((seq_a[:-1] + len_a[:-1]) & 0xFFFFFFFF)))
        run_starts = np.flatnonzero(~joins)
        run_end = np.empty(n, dtype=np.int64)  # per position: where the run containing it ends
        ends = np.append(run_starts[1:], n)
        run_end[:] = np.repeat(ends, np.diff(np.append(run_starts, n)))

        g_starts = np.flatnonzero(np.append(True, fid_a[1:] != fid_a[:-1]))
        g_sizes = np.diff(np.append(g_starts, n))
        g_fids = fid_a[g_starts]
        # Bulk groups: UDP flows already being analyzed with three or more datagrams here go to
        # their analyzer's datagram_batch as array slices, and need no Python values per packet
        # (RTP: most of the lane's packets). Only the other groups' rows become lists, indexed
        # from ``a - shift`` for a group starting at ``a``.
        bulk = (self.state[g_fids] == ANALYZING) & ~tcp_a[g_starts] & (g_sizes > 2)
        kept_sizes = np.where(bulk, 0, g_sizes)
        shifts = g_starts - (np.cumsum(kept_sizes) - kept_sizes)
        R = np.flatnonzero(np.repeat(~bulk, g_sizes))
        row_shift = np.repeat(shifts[~bulk], g_sizes[~bulk])
        # A merged run's bytes are gathered (by a kernel) when it is fed, not before: a flow may
        # be ignored after its first payloads (DPI gave up, TLS after its handshake, another
        # process's flow), and its later runs of the batch are then never copied. Single
        # segments stay zero-copy. g_pos: where each listed row's payload starts in its run.
        g_pos = np.zeros(len(R) + 1, dtype=np.int64)
        np.cumsum(len_a[R], out=g_pos[1:])
        origs = dir_a[R].tolist()
        offs = off_a[R].tolist()
        lens = len_a[R].tolist()
        seqs = seq_a[R].tolist()
        acks = D[idx[R], dk.C_ACK].tolist()
        flags = flag_a[R].tolist()
        times = time_a[R].tolist()
        run_ends = (run_end[R] - row_shift).tolist()
        gpos = g_pos.tolist()
        kernel_svc = PS[idx[R]].tolist() if PS is not None else None
        mv = memoryview(data)
        flows = self.flows
        state = self.state
        g_list = g_starts.tolist()
        fid_list = g_fids.tolist()
        if self.uids_of is not None:
            starts = [g for g, fid in enumerate(fid_list) if fid not in flows]
            fresh = [fid_list[g] for g in starts]
            self._new_uids = dict(zip(fresh, self.uids_of(np.array(fresh, dtype=np.int64)))) if fresh else {}
            # The new flows' endpoint addresses, formatted by one kernel call per side.
            rows = idx[g_starts[np.array(starts, dtype=np.int64)]]
            srcs = address_strings(A[rows, 0], A[rows, 1]).to_pylist()
            dsts = address_strings(A[rows, 2], A[rows, 3]).to_pylist()
            self._new_addrs = dict(zip(fresh, zip(srcs, dsts)))
        for ga, size, fid, is_bulk, sh in zip(g_list, g_sizes.tolist(), fid_list, bulk.tolist(), shifts.tolist()):
            if is_bulk:
                flow = flows.get(fid)
                if flow is None or flow.analyzer is None or state[fid] != ANALYZING:
                    continue
                an = flow.analyzer
                gb = ga + size
                an.datagram_batch(data, off_a[ga:gb], len_a[ga:gb], dir_a[ga:gb].astype(np.bool_), time_a[ga:gb])
                self._after_feed(fid, flow, an, float(time_a[gb - 1]))
                continue
            a = ga - sh  # the group's rows in the lists: a .. b
            b = a + size
            flow = flows.get(fid)
            if flow is None:
                if state[fid] == IGNORED:
                    continue
                i = int(idx[ga])
                flow = self._new_flow(fid, A[i], D[i], bool(origs[a]))
                if self.channels:
                    self._claim_channel(fid, flow, times[a])
                if kernel_svc is not None and kernel_svc[a] and flow.analyzer is None:
                    # Named by the flow kernel (DNS): no DPI, no pending copies, straight in.
                    name = flow.kernel_service = SERVICE_NAMES.get(kernel_svc[a], "")
                    cls = self.registry.get(name)
                    if cls is not None:  # (conn.service: the engine has the kernel's name)
                        self._start(fid, flow, cls)
            k = a
            # Undecided flows go packet by packet until DPI names them (or gives up).
            while k < b and flow.analyzer is None and flow.resniff is None:
                off = offs[k]
                self._pending(fid, flow, bool(origs[k]), seqs[k], acks[k], flags[k], mv[off : off + lens[k]], times[k])
                k += 1
                if state[fid] == IGNORED or state[fid] == IN_LANE:  # (IN_LANE: DPI handed it over)
                    break
            if k >= b or state[fid] == IGNORED:
                continue
            if state[fid] == IN_LANE:  # handed to the lane by DPI: the rest of its rows go there
                self._lane_rows.append(idx[k + sh : b + sh])
                continue
            if flow.stream is None and flow.analyzer is not None:
                an = flow.analyzer
                if b - k > 2 or type(an).datagram_batch is not _DEFAULT_DATAGRAM_BATCH:
                    an.datagram_batch(data, off_a[k + sh : b + sh], len_a[k + sh : b + sh],
                                      dir_a[k + sh : b + sh].astype(np.bool_), time_a[k + sh : b + sh])
                else:  # a short exchange (a DNS query and its answer): no array slicing
                    for j in range(k, b):
                        off = offs[j]
                        an.datagram(bool(origs[j]), bytes(mv[off : off + lens[j]]), times[j])
                        if getattr(an, "done", False):
                            break
                self._after_feed(fid, flow, an, times[b - 1])
                continue
            while k < b:
                e = run_ends[k]
                if e - k == 1:
                    off = offs[k]
                    payload = mv[off : off + lens[k]]
                else:  # into the reused scratch buffer: whoever keeps bytes copies them (see _deliver)
                    size = gpos[e] - gpos[k]
                    if size > self._gathered.shape[0]:
                        self._gathered = np.empty(max(size, 2 * self._gathered.shape[0]), dtype=np.uint8)
                    gather_payloads(data, off_a[k + sh : e + sh], len_a[k + sh : e + sh], self._gathered)
                    payload = memoryview(self._gathered)[:size]
                last = e - 1
                self._feed(fid, flow, bool(origs[k]), seqs[k], acks[last], flags[last], payload, times[k])
                k = e
                if state[fid] == IGNORED:
                    break

    def _grow(self, top: int) -> None:
        """Make the per-flow-id arrays hold flow id ``top``."""
        if top >= self.state.shape[0]:
            size = max(top + 1, self.state.shape[0] * 2)
            self.state = np.concatenate([self.state, np.zeros(size - self.state.shape[0], dtype=np.int8)])
            self.lane_owned = np.concatenate([self.lane_owned, np.zeros(size - self.lane_owned.shape[0], dtype=np.int8)])
            self._slot = np.concatenate([self._slot, np.full(size - self._slot.shape[0], -1, dtype=np.int64)])

    def _groups(self, fids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(order, firsts)`` of packets of flows ``fids``: ``order`` puts each flow's packets
        together (in capture order), flows ordered by their first packet; ``firsts``, each flow's
        first position (see :func:`~lawtap.streams.gather.flow_groups`)."""
        fids = np.ascontiguousarray(fids, dtype=np.int64)
        order = np.empty(fids.shape[0], dtype=np.int64)
        firsts = np.empty(fids.shape[0], dtype=np.int64)
        g = flow_groups(fids, self._slot, order, firsts)
        return order, firsts[:g]

    # ---- the lane's share (lawtap.streams.lane) ----
    def take_lane_share(self) -> tuple[np.ndarray, list[tuple[int, ConnInfo, str, list[tuple]]]]:
        """The main process, after a batch: the rows of it that are the lane's (sorted), and the
        TCP flows handed over since the last call (see :meth:`_decide`)."""
        rows, self._lane_rows = self._lane_rows, []
        handovers, self._handovers = self._handovers, []
        if not rows:
            return np.empty(0, dtype=np.int64), handovers
        return np.sort(np.concatenate(rows)) if len(rows) > 1 else rows[0], handovers

    def decide_pending(self) -> None:
        """The main process, as the run ends: DPI's last word on the flows still undecided (what
        :meth:`end` would ask), so that the lane gets its flows among them before it finishes."""
        for fid, flow in list(self.flows.items()):
            if flow.analyzer is None and flow.pending and flow.resniff is None:
                self._decide(fid, flow, final=True)

    def take_over(self, fid: int, conn: ConnInfo, service: str, kept: list[tuple]) -> None:
        """The lane: a TCP flow the main process's DPI named one of LANE_TCP_SERVICES, with the
        packets kept while it decided; later ones come in the shares' rows."""
        self._grow(fid)
        flow = self.flows[fid] = _Flow(conn=conn, proto=6, pending=kept)
        self.services[fid] = service
        cls = self.registry.get(service)
        if cls is None:
            self._ignore(fid)
            return
        self._start_with_pending(fid, flow, cls)

    def end(self, fids: list[int], ts: float) -> None:
        """Flows ended in the flow table: flush their streams and analyzers."""
        if self.dns_flows is not None:
            self.dns_flows.end(fids)
        for fid in fids:
            flow = self.flows.pop(fid, None)
            if flow is None:
                continue
            if flow.analyzer is None and flow.pending and flow.resniff is None:
                self._decide(fid, flow, final=True)
            if flow.analyzer is not None:
                if flow.stream is not None:
                    self._deliver(fid, flow, flow.stream.flush(ts))
                an = flow.analyzer
                an.finish(ts)
                if an.records or an.files or an.weirds or getattr(an, "expected_channels", None):
                    self._drain(fid, flow)

    def end_all(self, ts: float) -> None:
        self.end(list(self.flows), ts)

    def take(self) -> tuple[dict[str, list[tuple[int, ConnInfo, dict[str, Any]]]], list[tuple[int, ConnInfo, FileObject]], list[tuple[int, str, str, float]]]:
        """The analyzers' events so far: records by type as (fid, conn, fields), files, weirds."""
        dns = self.dns_flows
        if dns is not None and dns.weirds:
            self.weirds += dns.weirds
            dns.weirds = []
        out = (self.records, self.files, self.weirds)
        self.records, self.files, self.weirds = {}, [], []
        return out

    def take_tables(self) -> list[tuple[str, pa.Table]]:
        """Records made as whole tables (the UDP DNS flows'), by type."""
        tables = self.dns_flows.take() if self.dns_flows is not None else []
        return [("dns", table) for table in tables]

    # ---- internals ----
    def _split_lane(self, A: np.ndarray, D: np.ndarray, PF: np.ndarray, PD: np.ndarray, PS: np.ndarray,
                    idx: np.ndarray) -> np.ndarray:
        """The main process, with a lane: mark the flows first seen here that belong to the lane
        (UDP, but for those the flow kernel named, and those an announced data channel claims),
        set aside the rows of the lane's flows (its share, :meth:`take_lane_share`), and return
        the rest of ``idx``. (TCP flows go to the lane later, when DPI names their service:
        :meth:`_decide`.)
        """
        fids = PF[idx]
        state = self.state
        fresh = state[fids] == UNDECIDED
        if fresh.any():
            first = self._groups(fids)[1]
            firsts = first[fresh[first]]
            if self.flows:  # (undecided flows waiting for DPI are not new)
                firsts = firsts[np.array([f not in self.flows for f in fids[firsts].tolist()], dtype=np.bool_)]
            rows = idx[firsts]
            udp = D[rows, dk.C_PROTO] == 17
            named = np.isin(PS[rows], self._kernel_codes)
            kept = fids[firsts[udp & named]]
            if len(kept):  # UDP flows the kernel named: this process's
                self.lane_owned[kept] = 2
            joining = fids[firsts[udp & ~named]].tolist()
            if joining and self.channels:
                keep = set(self._unclaimed(joining, idx, fids, A, D, PD))
                claimed = [f for f in joining if f not in keep]
                if claimed:  # data channels announced here: this process's too
                    self.lane_owned[np.array(claimed, dtype=np.int64)] = 2
                joining = [f for f in joining if f in keep]
            if joining:
                joining_a = np.array(joining, dtype=np.int64)
                self.lane_owned[joining_a] = 1
                state[joining_a] = IN_LANE
        in_lane = state[fids] == IN_LANE
        if in_lane.any():
            self._lane_rows.append(idx[in_lane])
            return idx[~in_lane]
        return idx

    def _split_dns(self, data: np.ndarray, A: np.ndarray, D: np.ndarray, ts: np.ndarray, PF: np.ndarray,
                   PD: np.ndarray, PS: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Hand the UDP DNS flows' packets to :attr:`dns_flows`; return the rest of ``idx``.

        A UDP flow joins when its first packet seen here carries a DNS/mDNS service code (as
        with the lane, unless an announced data channel claims it), and stays until it ends.
        """
        fids = PF[idx]
        state = self.state
        fresh = (state[fids] == UNDECIDED) & np.isin(PS[idx], self._dns_codes) & (D[idx, dk.C_PROTO] == 17)
        if fresh.any():
            first = self._groups(fids)[1]
            firsts = first[fresh[first]]
            joining = [f for f in fids[firsts].tolist() if f not in self.flows]
            if joining and self.channels:
                keep = set(self._unclaimed(joining, idx, fids, A, D, PD))
                joining = [f for f in joining if f in keep]
            if joining:
                rows = idx[firsts[np.isin(fids[firsts], joining)]]
                self._join_dns(rows, PF, PD, PS, A, D)
        in_set = state[fids] == IN_DNS_SET
        if not in_set.any():
            return idx
        rows = idx[in_set]
        rows = rows[self._groups(PF[rows])[0]]
        self.dns_flows.messages_of(data, PF[rows], D[rows, dk.C_PAY_OFF], D[rows, dk.C_PAY_LEN], ts[rows] / 1e9,
                                   A[rows, :4], D[rows, dk.C_SPORT], D[rows, dk.C_DPORT], PD[rows])
        return idx[~in_set]

    def _join_dns(self, rows: np.ndarray, PF: np.ndarray, PD: np.ndarray, PS: np.ndarray, A: np.ndarray,
                  D: np.ndarray) -> None:
        """The flows whose first packets are ``rows`` go to :attr:`dns_flows` from now on (their
        conn.service is the flow kernel's name, which the engine has)."""
        self.state[PF[rows]] = IN_DNS_SET

    def _uids(self, fids: np.ndarray) -> list[str]:
        return self.uids_of(fids) if self.uids_of is not None else [self.uid_of(f) for f in fids.tolist()]

    def _unclaimed(self, joining: list[int], idx: np.ndarray, fids: np.ndarray, A: np.ndarray, D: np.ndarray,
                   PD: np.ndarray) -> list[int]:
        """The flows of ``joining`` that no announced data channel would claim."""
        from lawtap.analyzers.ftp import match_channel

        first_row: dict[int, int] = {}
        for pos, fid in enumerate(fids.tolist()):
            first_row.setdefault(fid, pos)
        keep = []
        for fid in joining:
            i = int(idx[first_row[fid]])
            conn = self._conn_info(fid, A[i], D[i], bool(PD[i]))
            if match_channel(self.channels, conn) is None:
                keep.append(fid)
        return keep

    def _conn_info(self, fid: int, addrs: np.ndarray, row: np.ndarray, is_orig: bool) -> ConnInfo:
        known = self._new_addrs.get(fid)
        if known is not None:
            src, dst = known
        else:
            src = address_text(int(addrs[0]), int(addrs[1]))
            dst = address_text(int(addrs[2]), int(addrs[3]))
        sport, dport = int(row[dk.C_SPORT]), int(row[dk.C_DPORT])
        proto = "tcp" if int(row[dk.C_PROTO]) == 6 else "udp"
        uid = self._new_uids.get(fid) or self.uid_of(fid)
        if is_orig:
            return ConnInfo(uid, src, sport, dst, dport, proto)
        return ConnInfo(uid, dst, dport, src, sport, proto)

    def _new_flow(self, fid: int, addrs: np.ndarray, row: np.ndarray, is_orig: bool) -> _Flow:
        conn = self._conn_info(fid, addrs, row, is_orig)
        flow = self.flows[fid] = _Flow(conn=conn, proto=int(row[dk.C_PROTO]))
        return flow

    def _claim_channel(self, fid: int, flow: _Flow, t: float) -> bool:
        from lawtap.analyzers.ftp import match_channel

        ch = match_channel(self.channels, flow.conn, t)
        if ch is None:
            return False
        ch.claimed = True
        self.channels = [c for c in self.channels if not c.claimed and t - c.created < 3600]
        self._start(fid, flow, ch.analyzer)
        self.services[fid] = getattr(flow.analyzer, "service", "") or ""
        return True

    def _start(self, fid: int, flow: _Flow, make: Callable[[ConnInfo], StreamAnalyzer]) -> None:
        """Give the flow its analyzer."""
        flow.analyzer = make(flow.conn)
        self.state[fid] = ANALYZING
        if flow.proto == 6:
            flow.stream = TcpStream()

    def _classify(self, flow: _Flow, orig: list[bytes], resp: list[bytes]) -> str:
        if self.classify is None or not (orig or resp):
            return ""
        try:
            return self.classify(flow.conn.proto, flow.conn.orig_p, flow.conn.resp_p, orig, resp) or ""
        except Exception:  # DPI is fuzzed separately; a detector bug must not stop the run
            return ""

    def _pending(self, fid: int, flow: _Flow, is_orig: bool, seq: int, ack: int, flags: int, payload: memoryview, t: float) -> None:
        # The batch buffer is reused: what waits for DPI must be copied.
        flow.pending.append((is_orig, seq, ack, flags, bytes(payload), t))
        if len(payload):
            flow.payloads += 1
            self._decide(fid, flow, final=False)

    def _decide(self, fid: int, flow: _Flow, final: bool) -> None:
        orig = [p[4][:PENDING_BYTES] for p in flow.pending if p[0] and p[4]]
        resp = [p[4][:PENDING_BYTES] for p in flow.pending if not p[0] and p[4]]
        service = flow.kernel_service
        if not service and self.media_hint is not None and flow.proto == 17:
            service = self.media_hint(flow.conn) or ""
        if not service:
            service = self._classify(flow, orig, resp)
        if self.role == "main" and flow.proto == 6 and service in LANE_TCP_SERVICES:
            # TCP flows are this process's, but for the services the lane owns: handed over,
            # with the packets kept meanwhile (take_over, in the lane's process).
            self.lane_owned[fid] = 1
            self.services[fid] = service
            self.state[fid] = IN_LANE
            self.flows.pop(fid, None)
            self._handovers.append((fid, flow.conn, service, flow.pending))
            return
        if service:
            self.services[fid] = service
        cls = self.registry.get(service)
        if cls is None:
            if service or final or flow.payloads >= MAX_PENDING_PAYLOADS:
                self._ignore(fid)
            return
        self._start_with_pending(fid, flow, cls)

    def _start_with_pending(self, fid: int, flow: _Flow, make: Callable[[ConnInfo], StreamAnalyzer]) -> None:
        """Give the flow its analyzer and feed it the packets kept while DPI decided."""
        self._start(fid, flow, make)
        pending, flow.pending = flow.pending, []
        for is_orig, seq, ack, flags, payload, t in pending:
            self._feed(fid, flow, is_orig, seq, ack, flags, payload, t)

    def _ignore(self, fid: int) -> None:
        self.state[fid] = IGNORED
        self.flows.pop(fid, None)

    def _feed(self, fid: int, flow: _Flow, is_orig: bool, seq: int, ack: int, flags: int, payload, t: float) -> None:
        an = flow.analyzer
        if an is None:  # sniffing the rest of a stream whose analyzer quit (STARTTLS)
            self._resniff(fid, flow, flow.stream.packet(is_orig, seq, ack, flags, payload, t), t)
            return
        if flow.stream is not None:
            self._deliver(fid, flow, flow.stream.packet(is_orig, seq, ack, flags, payload, t))
        else:
            an.datagram(is_orig, bytes(payload), t)
        self._after_feed(fid, flow, an, t)

    def _after_feed(self, fid: int, flow: _Flow, an: StreamAnalyzer, t: float) -> None:
        """Collect what the analyzer produced; retire it (or re-sniff for STARTTLS) when done."""
        if an.records or an.files or an.weirds or getattr(an, "expected_channels", None):
            self._drain(fid, flow)
        if getattr(an, "done", False):
            an.finish(t)
            self._drain(fid, flow)
            if flow.stream is not None and not flow.resniffed and an.service in STARTTLS_SERVICES:
                flow.analyzer = None
                flow.resniffed = True
                flow.resniff = []
            else:
                self._ignore(fid)

    def _resniff(self, fid: int, flow: _Flow, events: list, t: float) -> None:
        buf = flow.resniff
        assert buf is not None
        for is_orig, ev in events:
            if isinstance(ev, Data) and len(ev.data):
                buf.append((is_orig, bytes(ev.data), ev.ts))
        if not buf:
            return
        orig = [d[:PENDING_BYTES] for o, d, _ in buf if o]
        resp = [d[:PENDING_BYTES] for o, d, _ in buf if not o]
        service = self._classify(flow, orig, resp)
        cls = self.registry.get(service) if service == "tls" else None
        if cls is None:
            if service or len(buf) >= MAX_PENDING_PAYLOADS:
                self._ignore(fid)
            return
        flow.analyzer = an = cls(flow.conn)
        flow.resniff = None
        for is_orig, data, ts in buf:
            an.feed(is_orig, data, ts)
        self._drain(fid, flow)

    def _deliver(self, fid: int, flow: _Flow, events: list) -> None:
        an = flow.analyzer
        assert an is not None
        for is_orig, ev in events:
            if isinstance(ev, Data):
                an.feed(is_orig, bytes(ev.data), ev.ts)
            elif isinstance(ev, Gap):
                an.gap(is_orig, ev.length, ev.ts)
            else:
                self.weirds.append((fid, ev.name, ev.detail, ev.ts))

    def _drain(self, fid: int, flow: _Flow) -> None:
        an = flow.analyzer
        assert an is not None
        records, files, weirds = an.drain()
        announced = getattr(an, "expected_channels", None)
        if announced:
            self.channels.extend(announced)
            del announced[:]
        conn = flow.conn
        if records:
            out = self.records
            for type_name, fields in records:
                bucket = out.get(type_name)
                if bucket is None:
                    bucket = out[type_name] = []
                bucket.append((fid, conn, fields))
        if files:
            self.files.extend((fid, conn, f) for f in files)
        if weirds:
            self.weirds.extend((fid, name, detail, 0.0) for name, detail in weirds)
