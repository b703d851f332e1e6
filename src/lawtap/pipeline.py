"""``lawtap analyze``: source -> decode -> (defrag) -> flows -> records -> sinks, batch by batch.

Each stage is a plain object; this module only wires them and keeps the run's counters. Python
work here is per batch (tens of thousands of packets) or per finished flow, never per packet,
except for IP fragments, which take the defragmenter's slow path.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from lawtap.decode import kernel as dk
from lawtap.decode.defrag import Defragmenter
from lawtap.errors import LawtapError
from lawtap.flows.engine import FlowEngine
from lawtap.records import PACKETS, WEIRD, as_timestamps
from lawtap.sources.batch import PacketBatch

if TYPE_CHECKING:
    from lawtap.intercept.collector import Collector


@dataclass
class RunStats:
    """Counters for the summary and case.json."""

    packets: int = 0
    bytes: int = 0
    flow_packets: int = 0
    non_ip: int = 0
    ip_other: int = 0
    fragments: int = 0
    reassembled: int = 0
    malformed: int = 0
    first_ts: int = 0
    last_ts: int = 0
    flows: int = 0
    peak_flows: int = 0
    weirds: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "weirds"}
        d["weirds"] = dict(self.weirds)
        return d


def weird_batch(names: list[str], source: str, *, ts_us=None, uids=None, details=None, frames=None,
                files=None, offsets=None) -> pa.RecordBatch:
    """``weird`` records; columns not given are null (timestamps in µs since the epoch)."""
    n = len(names)

    def col(values, typ):
        return pa.array(values if values is not None else [None] * n, type=typ)

    return pa.RecordBatch.from_arrays(
        [as_timestamps(col(ts_us, pa.int64()), WEIRD.field("ts").type), col(uids, pa.string()), pa.array(names, pa.string()),
         col(details, pa.string()), pa.array([source] * n, pa.string()), col(frames, pa.int64()),
         col(files, pa.string()), col(offsets, pa.int64())],
        schema=WEIRD,
    )


def run_salt(paths: Iterable[Path]) -> bytes:
    """A salt for uids derived from the inputs, so the same capture always yields the same uids."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(Path(p).name).encode())
        try:
            with open(p, "rb") as f:
                h.update(f.read(65536))
        except OSError:
            pass
    return h.digest()


def decode(batch: PacketBatch, defrag: Defragmenter, stats: RunStats | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a batch (kernel), reassembling IP fragments on the slow path.

    Returns ``(data, A, D)``: ``data`` is the batch buffer, extended with the reassembled
    datagrams when there were any (their rows point into the extension).
    """
    A, D = dk.new_columns(len(batch))
    dk.decode_batch(batch.data, batch.offset, batch.caplen, batch.linktype, A, D)
    frag_idx = np.nonzero(D[:, dk.C_STATUS] == dk.ST_FRAGMENT)[0]
    if not len(frag_idx):
        return batch.data, A, D
    if stats is not None:
        stats.fragments += len(frag_idx)
    extra: list[bytes] = []
    rows: list[int] = []
    for i in frag_idx.tolist():
        start = int(D[i, dk.C_L3_OFF])
        ip = batch.data[start : start + int(D[i, dk.C_L3_LEN])].tobytes()
        whole = defrag.feed(ip, int(batch.ts[i]))
        if whole is not None:
            extra.append(whole)
            rows.append(i)
    defrag.expire(int(batch.ts[frag_idx[-1]]))
    if not extra:
        return batch.data, A, D
    if stats is not None:
        stats.reassembled += len(extra)
    base = batch.data.shape[0]
    data = np.concatenate([batch.data, np.frombuffer(b"".join(extra), dtype=np.uint8)])
    offs = np.cumsum([0] + [len(x) for x in extra[:-1]]).astype(np.int64) + base
    lens = np.array([len(x) for x in extra], dtype=np.int32)
    A2, D2 = dk.new_columns(len(extra))
    dk.decode_batch(data, offs, lens, np.full(len(extra), 101, dtype=np.int32), A2, D2)
    for k, i in enumerate(rows):
        # The reassembled datagram replaces its last fragment; VLANs and an outer tunnel seen
        # on that fragment stay with it.
        keep_tunnel = D[i, dk.C_TUN_KIND] != dk.TUN_NONE and D2[k, dk.C_TUN_KIND] == dk.TUN_NONE
        vlan, ivlan = D[i, dk.C_VLAN], D[i, dk.C_INNER_VLAN]
        if keep_tunnel:
            tun_cols = D[i, dk.C_TUN_KIND : dk.C_TUN_PAY_LEN + 1].copy()
            outer = A[i, 4:8].copy()
        A[i, :] = A2[k, :]
        D[i, :] = D2[k, :]
        D[i, dk.C_VLAN], D[i, dk.C_INNER_VLAN] = vlan, ivlan
        if keep_tunnel:
            D[i, dk.C_TUN_KIND : dk.C_TUN_PAY_LEN + 1] = tun_cols
            A[i, 4:8] = outer
    return data, A, D


class Analyzer:
    """Feeds batches through decode and flows, handing record batches to a sink callback."""

    def __init__(self, salt: bytes, file_names: list[str], classify=None, *, analyzers: bool = True,
                 artifact_root: Path | None = None, role: str | None = None) -> None:
        # role "lane": this is the lane's process (lawtap.streams.lane), which analyzes its share
        # of the flows and writes only their records; the main process writes everything else.
        self.role = role
        self.lane = None  # the main process's RemoteLane, once started
        self._ending_lane = None  # the lane, once it has sent its last records
        self.engine = FlowEngine(salt, classify=classify)
        self.dpi = classify is not None
        # File ids: a counter under a salt; the lane counts its own files under another salt.
        self._fuid_salt = salt[::-1] if role != "lane" else hashlib.sha256(b"lane files" + salt).digest()
        self.defrag = Defragmenter()
        self.stats = RunStats()
        self.file_names = file_names
        self._frame = 0
        self._last_ts = 0
        self._n_files = 0
        self.dispatcher = None
        self._pending_files: list[tuple[list, list[str], list[str], Any]] = []  # digests still running
        self.calls = None
        self.identities = None
        if analyzers:
            from functools import partial

            from lawtap.analyzers import registry
            from lawtap.artifacts import ArtifactStore
            from lawtap.streams.dispatch import StreamDispatcher

            reg = dict(registry())
            media_hint = None
            if "sip" in reg:
                # Calls span flows (SIP signalling, RTP media): one tracker per run ties them.
                from lawtap.analyzers.calls import CallTracker

                self.calls = CallTracker(write_wav=artifact_root is not None)
                for name in ("sip", "rtp", "rtcp"):
                    if name in reg:
                        reg[name] = partial(reg[name], tracker=self.calls)
                media_hint = self._media_hint
            if "dhcp" in reg:
                # DHCP transactions span flows (DISCOVER broadcast, unicast ACK): one tracker.
                from lawtap.analyzers.dhcp import DhcpTracker

                reg["dhcp"] = partial(reg["dhcp"], tracker=DhcpTracker())
            from lawtap.identity import IdentityResolver

            self.identities = IdentityResolver()
            self.dispatcher = StreamDispatcher(reg, classify, self.engine.uid, media_hint, uids_of=self.engine.uids,
                                               role=role)
            self.engine.share_services(self.dispatcher.services)
            self.artifacts = ArtifactStore(artifact_root)

    def decode(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The decode stage alone (may run in a reader thread, ahead of :meth:`process`)."""
        return decode(batch, self.defrag, self.stats) if len(batch) else None

    def process(self, batch: PacketBatch, decoded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Analyze one batch (``decoded``: what :meth:`decode` returned for it, if already run);
        yields (record type, record batch) pairs to write. With a lane, sends it its share of
        the batch once this process is done with it."""
        n = len(batch)
        st = self.stats
        if batch.weirds:
            yield "weird", self._reader_weirds(batch)
        if n == 0:
            return
        data, A, D = decoded if decoded is not None else decode(batch, self.defrag, st)
        status = D[:, dk.C_STATUS]
        PF, POF, PD, PS = self.engine.run(data, A, D, batch.ts)
        ended = list(self.engine.ended_fids) if self.lane is not None else []
        self._last_ts = max(self._last_ts, int(batch.ts[-1]))
        try:
            if self.dispatcher is not None:
                self.dispatcher.batch(data, A, D, batch.ts, PF, PD, PS)
                if self.calls is not None:
                    self.calls.tick(self._last_ts / 1e9)

            st.packets += n
            st.bytes += int(batch.caplen.sum())
            st.flow_packets += int(np.count_nonzero(status == dk.ST_FLOW))
            st.non_ip += int(np.count_nonzero(status == dk.ST_NON_IP))
            st.ip_other += int(np.count_nonzero(status == dk.ST_IP_OTHER))
            st.malformed += int(np.count_nonzero(status == dk.ST_BAD))
            if st.first_ts == 0:
                st.first_ts = int(batch.ts[0])
            st.first_ts = min(st.first_ts, int(batch.ts.min()))
            st.last_ts = max(st.last_ts, int(batch.ts.max()))

            frames = np.arange(self._frame + 1, self._frame + n + 1, dtype=np.int64)
            self._frame += n
            weird_rows = np.nonzero(D[:, dk.C_WEIRD])[0]
            if len(weird_rows):
                yield "weird", self._decode_weirds(batch, D, PF, frames, weird_rows)
            if self.defrag.weirds:
                yield "weird", self._simple_weirds(self.defrag.weirds, "defrag", int(batch.ts[-1]))
                self.defrag.weirds = []
            yield "packets", pa.RecordBatch.from_arrays(
                [
                    pa.array(frames),
                    pa.array(batch.ts, type=pa.int64()),
                    pa.array(PF),
                    pa.array(POF),
                    pa.array(batch.file_id, type=pa.int16()),
                    pa.array(batch.file_offset, type=pa.int64()),
                    pa.array(batch.caplen, type=pa.int32()),
                    pa.array(batch.wirelen, type=pa.int32()),
                    pa.array(batch.linktype, type=pa.int32()),
                ],
                schema=PACKETS,
            )
            yield from self._records()  # (flows ended here may be handed to the lane: DPI's last word)
        finally:
            # Also when Ctrl-C cuts the batch short: the lane analyzes every batch this process
            # began (its rows were set aside first), so none of its flows loses packets.
            if self.lane is not None:
                self._send_share(data, A, D, batch.ts, PF, PD, PS, ended)
        if self.lane is not None:
            yield from self._lane_records(self.lane.poll())
            yield from self._lane_conn(self.lane)

    def _send_share(self, data: np.ndarray, A: np.ndarray, D: np.ndarray, ts: np.ndarray, PF: np.ndarray,
                    PD: np.ndarray, PS: np.ndarray, ended: list[int]) -> None:
        """Send the lane its share of the batch (cut on the lane's sending thread)."""
        from functools import partial

        from lawtap.streams.lane import Share

        rows, handovers = self.dispatcher.take_lane_share()
        self.lane.advance(partial(Share.cut, rows, data, A, D, ts, PF, PD, PS, handovers, ended, self._last_ts))

    def process_share(self, share) -> Iterator[tuple[str, pa.RecordBatch]]:
        """The lane's process: analyze its share of a batch (a :class:`lawtap.streams.lane.Share`:
        its flows' rows, the TCP flows handed over, the flows the main process's table ended)."""
        self.engine.ended_fids += share.ended
        self._last_ts = max(self._last_ts, share.last_ts)
        for handover in share.handovers:
            self.dispatcher.take_over(*handover)
        if len(share.PF):
            self.dispatcher.batch(share.data, share.A, share.D, share.ts, share.PF, share.PD, share.PS)
        if self.calls is not None:
            self.calls.tick(self._last_ts / 1e9)
        yield from self._records()

    def finish(self, ended: list[int] | None = None, handovers: list | None = None, *,
               idle: Callable[[], None] | None = None) -> Iterator[tuple[str, pa.RecordBatch]]:
        """End the run (in the lane's process: ``ended``, the flows the main process's table
        ended last, and ``handovers``, the TCP flows its DPI handed over at the end). With a
        lane, ``idle`` is called when this process is done and waits for the lane's last
        records (the case writer can encode what it holds meanwhile)."""
        if ended is None:
            self.engine.finish()
        else:
            self.engine.ended_fids += ended
            for handover in handovers or []:
                self.dispatcher.take_over(*handover)
        last_ended = list(self.engine.ended_fids)
        if self.lane is not None:  # the lane finishes while this process does
            self.dispatcher.decide_pending()
            self.lane.announce_finish(self.dispatcher.take_lane_share()[1], last_ended)
        yield from self._records()
        if self.dispatcher is not None:
            self.dispatcher.end_all(self._last_ts / 1e9)
            if self.calls is not None:
                self.calls.finish(self._last_ts / 1e9)
            yield from self._analyzer_records(final=True)
            if self.lane is not None:
                lane, self.lane = self.lane, None
                self._ending_lane = lane  # (close() waits for its last artifacts)
                if idle is not None:
                    idle()
                yield from self._lane_records(lane.finish())
                yield from self._lane_conn(lane, final=True)
            if self.identities is not None and self.role != "lane":  # (the lane's events come here)
                for rb in self.identities.table().to_batches():
                    yield "identity", rb
        self.stats.peak_flows = self.engine.peak_flows

    def use_lane(self, lane) -> None:
        """Share the flows with a second process (:class:`lawtap.streams.lane.RemoteLane`), which
        analyzes its share of the flows (UDP but DNS, SIP and mail), sent after each batch, with
        this process's flow ids; its records reach :meth:`process` as it sends them. The conn
        records of its flows wait here for their service (:meth:`_lane_conn`)."""
        assert self.dispatcher is not None and self.lane is None
        self.lane = lane
        self.dispatcher.role = "main"
        self._held_conn: list[tuple[int, pa.RecordBatch]] = []  # (batch number, the lane's flows' conn rows)
        # The engine builds the conn rows of the lane's flows apart (their service is the
        # lane's to say): _hold_lane_conn keeps them until the lane has answered.
        self.engine.owned_rows = self.dispatcher.conn_rows_owned

    def _hold_lane_conn(self) -> None:
        """Keep aside the conn rows of the lane's flows the engine built since the last call."""
        held, self.engine.held_conn_batches = self.engine.held_conn_batches, []
        for rb in held:
            # (the share of the batch they ended in is sent after them: :meth:`process`)
            self._held_conn.append((self.lane.granted + 1, rb))

    def _lane_conn(self, lane, final: bool = False) -> Iterator[tuple[str, pa.RecordBatch]]:
        """The held conn rows of the lane's flows, once the lane has analyzed the batch they
        ended in (all of them once it is ``final``), with the services it found."""
        held = self._held_conn
        services = lane.services
        while held and (final or held[0][0] <= lane.answered):
            _, rb = held.pop(0)
            fids = rb.column("fid").to_pylist()
            column = rb.column("service").to_pylist()
            column = [services.pop(f, s) or None for f, s in zip(fids, column)]
            rb = rb.set_column(rb.schema.get_field_index("service"), rb.schema.field("service"),
                               pa.array(column, type=pa.string()))
            self.stats.flows += rb.num_rows
            yield "conn", rb

    def _lane_records(self, batches: list[tuple[str, pa.RecordBatch]]) -> Iterator[tuple[str, pa.RecordBatch]]:
        """The lane's records, to write with this process's; its anomalies are counted, its
        identity events join this process's. (Every conn record is this process's to write:
        :meth:`_lane_conn`.)"""
        for type_name, rb in batches:
            if type_name == "weird":
                self.stats.weirds.update(rb.column("name").to_pylist())
            elif type_name == "identity_event" and self.identities is not None:
                self.identities.add_table(rb)
            yield type_name, rb

    def close(self) -> None:
        """Wait for the artifacts still being written, here and in the lane (raises the first
        write failure); stop a lane process the run did not finish (after an error)."""
        if self.dispatcher is not None:
            if self.lane is not None:
                self.lane.close()
            try:
                self.artifacts.close()
            finally:
                if self._ending_lane is not None:
                    lane, self._ending_lane = self._ending_lane, None
                    lane.wait_done()

    # ---- helpers ----
    def _records(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        ended, self.engine.ended_fids = self.engine.ended_fids, []
        if self.dispatcher is not None and ended:
            self.dispatcher.end(ended, self._last_ts / 1e9)
            yield from self._analyzer_records()
        conn, tun = self.engine.take_records()
        if self.lane is not None:
            self._hold_lane_conn()
        for rb in conn:
            self.stats.flows += rb.num_rows
            yield "conn", rb
        for rb in tun:
            yield "tunnel", rb

    def _media_hint(self, conn) -> str | None:
        """RTP/RTCP announced by SDP for this UDP flow (either endpoint)."""
        calls = self.calls
        if calls.expected_media(conn.resp_h, conn.resp_p) or calls.expected_media(conn.orig_h, conn.orig_p):
            return "rtp"
        return None

    def _analyzer_records(self, final: bool = False) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Turn the dispatcher's (and call tracker's) events into record batches (``final``:
        the run ends, wait for every file's digests)."""
        from lawtap.artifacts import PendingDigests, files_batch
        from lawtap.flows.engine import make_uids
        from lawtap.records import SCHEMAS

        records, files, weirds = self.dispatcher.take()
        for type_name, table in self.dispatcher.take_tables():
            for rb in table.to_batches():
                yield type_name, rb
        if self.calls is not None:
            # Call records come with their SIP connection; fid -1 marks "uid already known".
            c_records, c_files, c_weirds = self.calls.drain()
            for type_name, fields, conn in c_records:
                records.setdefault(type_name, []).append((-1, conn, fields))
            files += [(-1, conn, f) for f, conn in c_files]
            weirds += [(-1, name, detail, 0.0) for name, detail, _ in c_weirds]
        salt = self.engine.salt
        default_ts = self._last_ts / 1e9
        for type_name, items in records.items():
            schema = SCHEMAS.get(type_name)
            if schema is None:
                self.stats.weirds["unregistered_record_type"] += len(items)
                continue
            table = _record_table(schema, items, default_ts)
            if type_name == "identity_event" and self.identities is not None:
                self.identities.add_table(table)
            for rb in table.to_batches():
                yield type_name, rb
        if files:
            uids = make_uids(salt, np.array([fid for fid, _, _ in files], dtype=np.int64)).to_pylist()
            uids = [conn.uid if fid < 0 else u for (fid, conn, _), u in zip(files, uids)]
            fuids = make_uids(self._fuid_salt, np.arange(self._n_files, self._n_files + len(files), dtype=np.int64), prefix="F").to_pylist()
            self._n_files += len(files)
            self._pending_files.append((files, uids, fuids, PendingDigests([f.data for _, _, f in files],
                                                                                 [f.sha256 for _, _, f in files],
                                                                                 [f.derived for _, _, f in files])))
        # Files records leave in the order their objects were found, once hashed (the run goes
        # on meanwhile); the last ones, and any beyond MAX_PENDING_FILE_BATCHES, are waited for.
        pending = self._pending_files
        while pending and (final or pending[0][3].done() or len(pending) > MAX_PENDING_FILE_BATCHES):
            files_, uids_, fuids_, hashes = pending.pop(0)
            yield "files", files_batch(files_, uids_, fuids_, self.artifacts, hashes.result())
        if weirds:
            uids = [u if w[0] >= 0 else None for w, u in zip(weirds, make_uids(salt, np.array([w[0] for w in weirds], dtype=np.int64)).to_pylist())]
            self.stats.weirds.update(w[1] for w in weirds)
            yield "weird", weird_batch([w[1] for w in weirds], "analyzer", uids=uids, details=[w[2] for w in weirds],
                                       ts_us=[int((w[3] or default_ts) * 1e6) for w in weirds])


    def _decode_weirds(self, batch: PacketBatch, D: np.ndarray, PF: np.ndarray, frames: np.ndarray, rows: np.ndarray) -> pa.RecordBatch:
        codes = D[rows, dk.C_WEIRD].tolist()
        names = [dk.WEIRD_NAMES[c] for c in codes]
        self.stats.weirds.update(names)
        fids = PF[rows].tolist()
        file_ids = batch.file_id[rows].tolist()
        return weird_batch(
            names, "decode", ts_us=batch.ts[rows] // 1000, frames=frames[rows], offsets=batch.file_offset[rows],
            uids=[self.engine.uid(f) if f >= 0 else None for f in fids],
            files=[self.file_names[f] if 0 <= f < len(self.file_names) else None for f in file_ids],
        )

    def _reader_weirds(self, batch: PacketBatch) -> pa.RecordBatch:
        ws = batch.weirds
        self.stats.weirds.update(w.name for w in ws)
        fid = int(batch.file_id[0]) if len(batch) else 0
        fname = self.file_names[fid] if 0 <= fid < len(self.file_names) else None
        return weird_batch([w.name for w in ws], "reader", details=[w.detail for w in ws], files=[fname] * len(ws),
                           offsets=[w.file_offset for w in ws])

    def _simple_weirds(self, items: list[tuple[str, str]], source: str, ts: int) -> pa.RecordBatch:
        self.stats.weirds.update(name for name, _ in items)
        return weird_batch([n for n, _ in items], source, details=[d for _, d in items],
                           ts_us=[ts // 1000] * len(items))

def run_analysis(
    sources: list,
    case_dir: str | Path,
    *,
    json_logs: bool = False,
    dpi: bool = True,
    analyzers: bool = True,
    extract: bool = True,
    progress: bool | None = None,
    overwrite: bool = False,
    command: list[str] | None = None,
) -> RunStats:
    """Analyze opened sources (CaptureSource/LiveSource) into ``case_dir``.

    Ctrl-C stops reading, ends the live flows and closes every Parquet file, so an interrupted
    run leaves a complete, queryable case marked ``interrupted`` in case.json.
    """
    from lawtap.progress import Progress
    from lawtap.sinks import CaseWriter, SourceInfo

    classify = None
    if dpi:
        from lawtap.dpi import classify
    infos = [
        SourceInfo(
            file_id=i,
            path=str(Path(s.path).resolve()) if getattr(s, "path", None) else f"live:{getattr(s, 'interface', '?')}",
            size=int(getattr(s, "size", 0) or 0),
            format=getattr(s, "format", "pcap"),
            compressed=bool(getattr(s, "compressed", False)),
        )
        for i, s in enumerate(sources)
    ]
    paths = [Path(s.path) for s in sources if getattr(s, "path", None)]
    salt = run_salt(paths)
    total = sum(int(getattr(s, "size", 0) or 0) for s in sources)
    artifact_root = Path(case_dir) if extract else None
    lane = None
    if analyzers and paths and len(paths) == len(sources):  # files only (live captures stay in one process)
        from lawtap.streams.lane import RemoteLane, lane_wanted

        if lane_wanted(total):  # started first: its start-up overlaps this process's
            lane = RemoteLane(salt, artifact_root, dpi)
    try:
        analyzer = Analyzer(salt, [info.path for info in infos], classify=classify, analyzers=analyzers,
                            artifact_root=artifact_root)
        writer = CaseWriter(case_dir, json_logs, sources=infos, command=command, overwrite=overwrite)
    except BaseException:
        if lane is not None:
            lane.close()
        raise
    if lane is not None:
        analyzer.use_lane(lane)
    interrupted = failed = False
    try:
        with Progress(total, enabled=progress) as bar:
            try:
                for batch, decoded in read_ahead(sources, analyzer):
                    for type_name, rb in analyzer.process(batch, decoded):
                        writer.write(type_name, rb)
                    bar.update(sum(int(getattr(s, "bytes_read", 0) or 0) for s in sources), analyzer.stats.packets)
            except KeyboardInterrupt:
                interrupted = True
        # A live source catches Ctrl-C itself and ends its stream; the run was still cut short.
        interrupted = interrupted or any(getattr(s, "interrupted", False) for s in sources)
        for type_name, rb in analyzer.finish(idle=lambda: writer.flush(wait=False)):
            writer.write(type_name, rb)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        failed = True  # the case is closed (every file readable) but not marked complete
        raise
    finally:
        try:
            analyzer.close()  # artifacts still being written
        except BaseException:
            failed = True  # (an artifact could not be written)
            raise
        finally:
            writer.close(stats=analyzer.stats.as_dict(), interrupted=interrupted, complete=False if failed else None)
    if interrupted:
        raise KeyboardInterrupt
    return analyzer.stats


MAX_PENDING_FILE_BATCHES = 2  # batches of recovered objects whose digests may run behind

_CONN_COLUMNS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")


def _record_table(schema: pa.Schema, items: list, default_ts: float) -> pa.Table:
    """Analyzer events ``(fid, conn, fields)`` as a table of ``schema``, built column by column.

    Why columns: DNS alone yields one record per transaction (129 k on the 1 GB workload); a
    dict per row handed to ``Table.from_pylist`` cost more than the analyzer. The uid and
    endpoints come from the connection (every analyzed flow's ``ConnInfo`` carries its uid),
    ``ts`` (seconds, float) becomes microseconds in one numpy step.
    """
    fields = [f for _, _, f in items]
    conns = [c for _, c, _ in items]
    ts = np.array([f.get("ts") or default_ts for f in fields], dtype=np.float64)
    ts_field = schema.field("ts")
    cols: dict[str, object] = {
        "ts": as_timestamps(pa.array((ts * 1e6).astype(np.int64)), ts_field.type),
        "uid": [c.uid for c in conns],
        "id.orig_h": [c.orig_h for c in conns],
        "id.orig_p": [c.orig_p for c in conns],
        "id.resp_h": [c.resp_h for c in conns],
        "id.resp_p": [c.resp_p for c in conns],
    }
    names = [name for name in schema.names if name not in cols]
    try:
        # Records that carry every field (DNS's do: a template copy per record) are read with
        # one C-level getter per record and transposed, instead of one lookup per field.
        rows = list(map(itemgetter(*names), fields)) if names else []
        columns = [rows] if len(names) == 1 else list(zip(*rows)) if rows else [[] for _ in names]
    except KeyError:  # some record leaves a field out (it means null): look each one up
        columns = [[f.get(name) for f in fields] for name in names]
    cols.update(zip(names, columns))
    return pa.Table.from_pydict(cols, schema=schema)


def tune_gc_for_a_run() -> None:
    """Fewer, later collections of the cyclic garbage collector, for a whole-capture run.

    Why: an analysis allocates millions of short-lived objects (records, payload copies) and
    almost no reference cycles; at Python's default thresholds the collector ran some 250
    times per GB, visiting the survivors each time, about 0.2 s a process. The objects made
    at start-up (modules, tables) are frozen out of its way, and a collection waits for 10,000
    allocations instead of 700. Called by the ``analyze`` command and the lane's process, not
    by :func:`run_analysis` itself (a library call leaves the host's settings alone).
    """
    import gc

    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def batch_bytes() -> int:
    """Bytes of capture per batch: ``DEFAULT_MAX_BYTES`` unless ``LAWTAP_BATCH_BYTES`` says
    otherwise (at least 64 KiB; tests use small batches to cross batch boundaries often)."""
    import os

    from lawtap.sources.open import DEFAULT_MAX_BYTES

    value = os.environ.get("LAWTAP_BATCH_BYTES")
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        return max(int(value), 64 << 10)
    except ValueError:
        raise LawtapError(f"LAWTAP_BATCH_BYTES must be a number of bytes, not {value!r}") from None


class _ReaderFailed:
    """Carries an exception from the reader thread to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(sources: list, analyzer: Analyzer | Collector, depth: int = 1) -> Iterator[tuple[PacketBatch, tuple | None]]:
    """Read and decode batches in a thread, ``depth`` batches ahead of the caller
    (``analyzer.decode(batch)``: the pipeline's :class:`Analyzer` or the intercept collector).

    Why: reading (``readinto``), indexing and decoding are kernels and system calls that release
    the GIL, so on a multi-core machine they overlap with the flow table, the analyzers and the
    Parquet writer of the previous batch. The read buffers rotate (``buffers = depth + 2``) so a
    batch's bytes stay valid while it is processed. Live captures keep the plain, in-thread
    loop: their source already buffers in libpcap, and Ctrl-C must reach it directly.
    """
    import queue
    import threading

    from lawtap.sources import merge_batches

    if any(getattr(s, "format", "live") == "live" for s in sources):
        for batch in merge_batches(sources):
            yield batch, None
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in merge_batches(sources, max_bytes=batch_bytes(), buffers=depth + 2):
                if not put((batch, analyzer.decode(batch))):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_ReaderFailed(e))
            return
        put(end)

    thread = threading.Thread(target=work, name="lawtap-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is end:
                return
            if isinstance(item, _ReaderFailed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
