"""Who held which address when: the identity resolver behind every attribution lawtap makes.

Analyzers that see address assignments (RADIUS, DHCPv4/v6, GTP-C; later SIP REGISTER and mail
logins) emit ``identity_event`` records. :class:`IdentityResolver` replays them in time order
into a table ``ip -> intervals [ts_start, ts_end)`` carrying the subscriber's attributes, and
answers the questions an investigator asks of every flow:

* :meth:`IdentityResolver.who` — who held ``ip`` at ``ts``;
* :meth:`IdentityResolver.by_teid` — whose PDP/PDN session a GTP-U packet (outer destination
  ``ip``, ``teid``) belongs to;
* :meth:`IdentityResolver.addresses_of` — which addresses an identity (user name, MAC, IMSI,
  MSISDN, IMEI...) held at ``ts``.

The event (a plain dict; only ``ts``, ``kind`` and ``action`` are required)::

    {ts, kind: 'radius'|'dhcp'|'dhcpv6'|'gtp'|'sip'|'mail', identity, ip,
     action: 'start'|'update'|'stop'|'lease'|'release', mac, imsi, msisdn, imei, apn,
     location, hostname, lease_time, session_time, session, teids: [(ip, teid), ...], uid}

Semantics (all of them are why the resolver exists rather than a join):

* ``start``/``lease`` opens an interval ``[ts, ts + lease_time)`` (open-ended without a lease
  time). The same identity renewing an address it holds extends the interval; another
  identity taking the address ends the previous holder's interval at ``ts`` (re-assignment).
* ``update`` (RADIUS Interim-Update, GTP Update/Modify, DHCP INFORM) extends or enriches the
  holder's interval. Seen without a start (capture began mid-session) it opens one, backdated
  by ``session_time`` (RADIUS Acct-Session-Time) but never over the previous holder.
* ``stop``/``release`` (RADIUS Stop, GTP Delete, DHCP RELEASE/DECLINE) ends the interval at
  ``ts``. A release naming another identity than the holder's is ignored (stale or spoofed).
  A stop seen without its start but with ``session_time`` records the whole closed session
  (when nobody else holds the address at that moment).
* Events without ``ip`` find their session through ``session`` (e.g. NAS + Acct-Session-Id)
  or ``teids`` (GTP control/user-plane tunnel endpoints): Delete PDP Context carries only the
  receiver's TEID. Sessions known only by TEID (no PDN address seen) still answer
  :meth:`by_teid`.
* A location change (GTP ULI) splits the interval, so the location history is kept.
* Each ``kind`` has its own timeline per address: a DHCP lease and a RADIUS session on the same
  address may coexist (different address realms, or the same device seen twice).
  :meth:`who` prefers address-assigning kinds (GTP, RADIUS, DHCP) over observations (SIP,
  mail), then the most recent start; :meth:`who_all` returns every holder.

Events may arrive out of time order (the pipeline emits a connection's events when it ends):
the resolver keeps them and replays in ``(ts, arrival)`` order, incrementally when new events
are not older than the replayed ones, otherwise by a full rebuild at the next query.
Lookups are a dict access plus a bisect per timeline, well over 1e5 lookups/s.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS
from lawtap.records import TS, as_timestamps

_COMMON = COMMON_FIELDS  # lawtap.analyzers.base

TEID_TYPE = pa.list_(pa.struct([pa.field("ip", pa.string()), pa.field("teid", pa.uint32())]))

#: What an analyzer emits: one piece of evidence that an identity held (or let go of) an address.
IDENTITY_EVENT_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("kind", pa.string()),
        pa.field("action", pa.string()),
        pa.field("identity", pa.string()),
        pa.field("ip", pa.string()),  # address, or IPv6 prefix "2001:db8::/56"
        pa.field("mac", pa.string()),
        pa.field("imsi", pa.string()),
        pa.field("msisdn", pa.string()),
        pa.field("imei", pa.string()),
        pa.field("apn", pa.string()),
        pa.field("location", pa.string()),
        pa.field("hostname", pa.string()),
        pa.field("lease_time", pa.float64()),  # seconds
        pa.field("session_time", pa.float64()),  # seconds the session had lasted at ts
        pa.field("session", pa.string()),
        pa.field("teids", TEID_TYPE),
    ]
)

#: What the resolver writes: one row per interval an identity held an address.
IDENTITY_SCHEMA = pa.schema(
    [
        pa.field("ts_start", TS),
        pa.field("ts_end", TS),  # null: still held when the evidence ends
        pa.field("kind", pa.string()),
        pa.field("identity", pa.string()),
        pa.field("ip", pa.string()),
        pa.field("source", pa.string()),  # uid of the flow that taught it
        pa.field("mac", pa.string()),
        pa.field("imsi", pa.string()),
        pa.field("msisdn", pa.string()),
        pa.field("imei", pa.string()),
        pa.field("apn", pa.string()),
        pa.field("location", pa.string()),
        pa.field("hostname", pa.string()),
        pa.field("session", pa.string()),
        pa.field("teids", TEID_TYPE),
    ]
)

KINDS = ("gtp", "radius", "dhcp", "dhcpv6", "sip", "mail")
ACTIONS = ("start", "update", "stop", "lease", "release")
# Address-assigning sources outrank mere observations of an identity using an address.
_AUTHORITY = {"gtp": 2, "radius": 2, "dhcp": 2, "dhcpv6": 2, "sip": 1, "mail": 1}
_ATTRS = ("mac", "imsi", "msisdn", "imei", "apn", "hostname")
_INDEXED = ("identity", "mac", "imsi", "msisdn", "imei", "hostname")

_HEX = re.compile(r"[^0-9a-fA-F]")


def normalize_mac(text: str | None) -> str | None:
    """``00-14-22-E9-54-5E`` / ``0014.22e9.545e`` / ``001422E9545E`` -> ``00:14:22:e9:54:5e``.

    Zeek's ``normalize_mac``: the hex digits of the string, 12 (EUI-48) or 16 (EUI-64) of
    them, lower-case and colon-separated; anything else is not a MAC (None here, "" in Zeek).
    """
    if not text:
        return None
    h = _HEX.sub("", text).lower()
    if len(h) not in (12, 16):
        return None
    return ":".join(h[i : i + 2] for i in range(0, len(h), 2))


def mac_from_bytes(b: bytes) -> str:
    """Link-layer address bytes as ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{x:02x}" for x in b)


def _norm_ip(ip: str | None) -> str | None:
    """Canonical text of an address or prefix (``2001:DB8::0:1`` -> ``2001:db8::1``)."""
    if not ip:
        return None
    try:
        if "/" in ip:
            net = ipaddress.ip_network(ip, strict=False)
            if net.prefixlen == net.max_prefixlen:
                return str(net.network_address)
            return str(net)
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


@dataclass(slots=True, eq=False)
class Identity:
    """One interval during which ``identity`` held ``ip`` (``ts_end`` None = not seen to end).

    Returned by the queries; treat as read-only (the resolver owns and updates it).
    """

    ts_start: float
    ts_end: float | None
    kind: str
    identity: str | None
    ip: str | None
    source: str | None = None
    mac: str | None = None
    imsi: str | None = None
    msisdn: str | None = None
    imei: str | None = None
    apn: str | None = None
    location: str | None = None
    hostname: str | None = None
    session: str | None = None
    teids: list[tuple[str, int]] = field(default_factory=list)

    def active(self, ts: float) -> bool:
        """Held at ``ts``: ``ts_start <= ts < ts_end`` (a zero-length interval holds at its instant)."""
        if ts < self.ts_start:
            return False
        end = self.ts_end
        return end is None or ts < end or (end == self.ts_start == ts)

    def record(self) -> dict[str, Any]:
        """The ``identity`` record (timestamps as float seconds)."""
        return {
            "ts_start": self.ts_start, "ts_end": self.ts_end, "kind": self.kind,
            "identity": self.identity, "ip": self.ip, "source": self.source, "mac": self.mac,
            "imsi": self.imsi, "msisdn": self.msisdn, "imei": self.imei, "apn": self.apn,
            "location": self.location, "hostname": self.hostname, "session": self.session,
            "teids": list(self.teids) or None,
        }


class _Timeline:
    """Non-overlapping intervals of one (address, kind), in start order: bisect on ``starts``."""

    __slots__ = ("starts", "items")

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.items: list[Identity] = []

    def at(self, ts: float) -> Identity | None:
        i = bisect_right(self.starts, ts) - 1
        if i < 0:
            return None
        iv = self.items[i]
        return iv if iv.active(ts) else None

    def last(self) -> Identity | None:
        return self.items[-1] if self.items else None

    def append(self, iv: Identity) -> None:
        self.starts.append(iv.ts_start)
        self.items.append(iv)


@dataclass(slots=True)
class _Event:
    ts: float
    kind: str
    action: str
    identity: str | None
    ip: str | None
    source: str | None
    attrs: dict[str, str | None]
    location: str | None
    lease_time: float | None
    session_time: float | None
    session: str | None
    teids: list[tuple[str, int]]


def _f(v: Any) -> float | None:
    if v is None:
        return None
    if hasattr(v, "timestamp"):  # datetime from an Arrow timestamp column
        return float(v.timestamp())
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x and abs(x) != float("inf") else None


def _s(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v)
    return s or None


def _teids(v: Any) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for t in v or ():
        if isinstance(t, Mapping):
            ip, teid = t.get("ip"), t.get("teid")
        else:
            try:
                ip, teid = t
            except (TypeError, ValueError):
                continue
        nip = _norm_ip(ip) if isinstance(ip, str) else None
        if nip is not None and isinstance(teid, int) and 0 <= teid <= 0xFFFFFFFF:
            out.append((nip, teid))
    return out


class IdentityResolver:
    """The time-indexed table of who held which address; fed ``identity_event`` dicts."""

    def __init__(self) -> None:
        self._events: list[_Event] = []
        self._replayed = 0  # events[:replayed] are in the table
        self._last_ts = float("-inf")  # newest replayed event
        self._max_added = float("-inf")  # newest event taken
        self._dirty = False  # an event older than the replayed ones arrived: rebuild
        self._tail_unsorted = False
        self._reset_tables()

    def _reset_tables(self) -> None:
        self._ip: dict[str, dict[str, _Timeline]] = {}
        self._teid: dict[tuple[str, int], list[Identity]] = {}
        self._session: dict[str, list[Identity]] = {}
        self._attr: dict[tuple[str, str], list[Identity]] = {}
        self._all: list[Identity] = []
        # Prefix timelines (IPv6 prefix delegation, PDN /64s) by (bits, prefix length, network):
        # an address lookup masks its integer once per prefix length in use.
        self._prefix: dict[tuple[int, int, int], dict[str, _Timeline]] = {}
        self._v6_prefix_lens: list[int] = []  # longest first
        self._v4_prefix_lens: list[int] = []

    # ---- input

    def add(self, event: Mapping[str, Any], source: str | None = None) -> bool:
        """Take one ``identity_event``; returns False (and ignores it) when it is unusable.

        ``source`` is the uid of the flow that carried it (default: the event's ``uid``).
        """
        ts = _f(event.get("ts"))
        kind = _s(event.get("kind"))
        action = _s(event.get("action"))
        if ts is None or kind is None or action not in ACTIONS:
            return False
        raw_ip = event.get("ip")
        ip = _norm_ip(raw_ip) if isinstance(raw_ip, str) else None
        attrs = {a: _s(event.get(a)) for a in _ATTRS}
        if attrs["mac"] is not None:
            attrs["mac"] = normalize_mac(attrs["mac"]) or attrs["mac"].lower()
        lease = _f(event.get("lease_time"))
        stime = _f(event.get("session_time"))
        ev = _Event(
            ts=ts, kind=kind, action=action, identity=_s(event.get("identity")), ip=ip,
            source=source if source is not None else _s(event.get("uid")), attrs=attrs,
            location=_s(event.get("location")),
            lease_time=lease if lease is not None and lease >= 0 else None,
            session_time=stime if stime is not None and stime >= 0 else None,
            session=_s(event.get("session")), teids=_teids(event.get("teids")),
        )
        if ev.identity is None:
            ev.identity = attrs["imsi"] or attrs["mac"] or attrs["msisdn"] or attrs["imei"]
        if ev.ip is None and not ev.teids and ev.session is None:
            return False  # nothing to attach it to
        if ts < self._last_ts:
            self._dirty = True  # older than what the table already holds: rebuild
        elif ts < self._max_added:
            self._tail_unsorted = True  # only the not yet replayed events need sorting
        self._max_added = max(self._max_added, ts)
        self._events.append(ev)
        return True

    def add_all(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Take many events (e.g. an analyzer's drained ``identity_event`` records)."""
        return sum(self.add(e) for e in events)

    def add_table(self, table: pa.Table | pa.RecordBatch) -> int:
        """Take ``identity_event`` rows as written by the pipeline (ts as timestamps, uid set)."""
        return self.add_all(table.to_pylist())

    # ---- replay

    def _sync(self) -> None:
        if self._dirty:
            self._events.sort(key=lambda e: e.ts)  # stable: arrival order breaks ties
            self._reset_tables()
            self._replayed = 0
            self._last_ts = float("-inf")
            self._dirty = self._tail_unsorted = False
        elif self._tail_unsorted:
            tail = sorted(self._events[self._replayed :], key=lambda e: e.ts)
            self._events[self._replayed :] = tail
            self._tail_unsorted = False
        evs = self._events
        while self._replayed < len(evs):
            ev = evs[self._replayed]
            self._replayed += 1
            self._apply(ev)
            self._last_ts = max(self._last_ts, ev.ts)

    def _timeline(self, ip: str, kind: str) -> _Timeline:
        by_kind = self._ip.get(ip)
        if by_kind is None:
            by_kind = self._ip[ip] = {}
            if "/" in ip:
                net = ipaddress.ip_network(ip)
                bits = net.max_prefixlen
                self._prefix[(bits, net.prefixlen, int(net.network_address))] = by_kind
                lens = self._v6_prefix_lens if bits == 128 else self._v4_prefix_lens
                if net.prefixlen not in lens:
                    lens.append(net.prefixlen)
                    lens.sort(reverse=True)
        tl = by_kind.get(kind)
        if tl is None:
            tl = by_kind[kind] = _Timeline()
        return tl

    def _located(self, ev: _Event) -> list[Identity]:
        """Open intervals of the session(s) an event refers to (by session key or TEID)."""
        found: list[Identity] = []
        seen: set[int] = set()
        lists = []
        if ev.session is not None:
            lists.append(self._session.get(ev.session, ()))
        for key in ev.teids:
            lists.append(self._teid.get(key, ()))
        for lst in lists:
            for iv in lst:
                if id(iv) not in seen and iv.kind == ev.kind and iv.active(ev.ts):
                    seen.add(id(iv))
                    found.append(iv)
        return found

    @staticmethod
    def _same_holder(iv: Identity, ev: _Event) -> bool:
        if iv.identity is not None and ev.identity is not None:
            return iv.identity == ev.identity
        mac = ev.attrs.get("mac")
        if iv.mac is not None and mac is not None:
            return iv.mac == mac
        return True  # nothing says otherwise

    def _index(self, iv: Identity) -> None:
        for key in iv.teids:
            lst = self._teid.setdefault(key, [])
            if not lst or lst[-1] is not iv:
                lst.append(iv)
        if iv.session is not None:
            lst = self._session.setdefault(iv.session, [])
            if not lst or lst[-1] is not iv:
                lst.append(iv)
        for a in _INDEXED:
            v = getattr(iv, a)
            if v is not None:
                lst = self._attr.setdefault((a, v), [])
                if not lst or lst[-1] is not iv:
                    lst.append(iv)

    def _new(self, ev: _Event, start: float) -> Identity:
        end = ev.ts + ev.lease_time if ev.lease_time is not None else None
        iv = Identity(
            ts_start=start, ts_end=end, kind=ev.kind, identity=ev.identity, ip=ev.ip,
            source=ev.source, location=ev.location, session=ev.session, teids=list(ev.teids),
            **ev.attrs,
        )
        if ev.ip is not None:
            self._timeline(ev.ip, ev.kind).append(iv)
        self._all.append(iv)
        self._index(iv)
        return iv

    def _merge(self, iv: Identity, ev: _Event) -> Identity:
        """Enrich/extend ``iv`` with a same-holder event; split it when the location moved."""
        if ev.location is not None and iv.location is not None and ev.location != iv.location and ev.ts > iv.ts_start:
            old_end = iv.ts_end
            iv.ts_end = ev.ts
            nxt = replace(iv, ts_start=ev.ts, ts_end=old_end, location=ev.location, source=ev.source,
                          teids=list(iv.teids))
            if nxt.ip is not None:
                self._timeline(nxt.ip, nxt.kind).append(nxt)
            self._all.append(nxt)
            iv = nxt
        elif ev.location is not None:
            iv.location = ev.location
        for a, v in ev.attrs.items():
            if v is not None and getattr(iv, a) is None:
                setattr(iv, a, v)
        if iv.identity is None and ev.identity is not None:
            iv.identity = ev.identity
        if iv.session is None and ev.session is not None:
            iv.session = ev.session
        elif ev.session is not None and ev.session != iv.session:
            # A second session (re-login) continuing the same holding: its Stop must find it too.
            lst = self._session.setdefault(ev.session, [])
            if not lst or lst[-1] is not iv:
                lst.append(iv)
        for key in ev.teids:
            if key not in iv.teids:
                iv.teids.append(key)
        if ev.lease_time is not None:
            iv.ts_end = ev.ts + ev.lease_time  # the latest grant is the lease now
        self._index(iv)
        return iv

    def _backdated_start(self, tl: _Timeline | None, ev: _Event) -> float:
        if ev.session_time is None:
            return ev.ts
        start = ev.ts - ev.session_time
        prev = tl.last() if tl is not None else None
        if prev is not None:
            floor = prev.ts_end if prev.ts_end is not None else prev.ts_start
            start = max(start, floor)
        return min(start, ev.ts)

    def _apply(self, ev: _Event) -> None:
        ts = ev.ts
        if ev.action in ("stop", "release"):
            targets = self._located(ev)
            tl = self._ip.get(ev.ip, {}).get(ev.kind) if ev.ip is not None else None
            if tl is not None:
                cur = tl.at(ts)
                if cur is not None and self._same_holder(cur, ev) and cur not in targets:
                    targets.append(cur)
            for iv in targets:
                if iv.ts_end is None or iv.ts_end > ts:
                    iv.ts_end = ts
                self._merge_attrs_only(iv, ev)
            # A stop without its start records the closed session, unless another identity
            # holds the address at that moment (then the stop is stale or spoofed: ignored).
            if (not targets and ev.ip is not None and ev.action == "stop" and ev.session_time is not None
                    and (tl is None or tl.at(ts) is None)):
                start = self._backdated_start(tl, ev)
                iv = self._new(replace(ev, lease_time=None), start)
                iv.ts_end = ts
            return
        if ev.ip is None:
            located = self._located(ev)
            if located:
                for iv in located:
                    self._merge(iv, ev)
            elif ev.action in ("start", "lease"):
                self._new(ev, ts)
            return
        tl = self._timeline(ev.ip, ev.kind)
        cur = tl.at(ts)
        if cur is not None and self._same_holder(cur, ev):
            self._merge(cur, ev)
            return
        if cur is not None:
            cur.ts_end = ts  # re-assignment: the previous holder lost the address now
            start = ts
        else:
            start = self._backdated_start(tl, ev) if ev.action == "update" else ts
            # The address of a session so far known only by TEID/session key arrives now.
            for iv in self._located(ev):
                if iv.ip is None and self._same_holder(iv, ev):
                    iv.ip = ev.ip
                    iv.ts_start = max(iv.ts_start, self._floor(tl))
                    tl.append(iv)
                    self._merge(iv, ev)
                    return
        self._new(ev, start)

    @staticmethod
    def _floor(tl: _Timeline) -> float:
        prev = tl.last()
        if prev is None:
            return float("-inf")
        return prev.ts_end if prev.ts_end is not None else prev.ts_start

    def _merge_attrs_only(self, iv: Identity, ev: _Event) -> None:
        for a, v in ev.attrs.items():
            if v is not None and getattr(iv, a) is None:
                setattr(iv, a, v)
        self._index(iv)

    # ---- queries

    def _timelines_for(self, ip: str) -> list[_Timeline]:
        """Timelines of the address itself and of every known prefix covering it.

        ``inet_pton``/``inet_ntop`` rather than :mod:`ipaddress`: ten times cheaper per lookup.
        """
        v6 = ":" in ip
        try:
            packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, ip)
        except OSError:  # a prefix, a scoped address, or junk
            nip = _norm_ip(ip)
            by_kind = self._ip.get(ip) or (self._ip.get(nip) if nip else None)
            return list(by_kind.values()) if by_kind else []
        by_kind = self._ip.get(ip)
        if by_kind is None and v6:
            by_kind = self._ip.get(socket.inet_ntop(socket.AF_INET6, packed))
        out = list(by_kind.values()) if by_kind else []
        lens = self._v6_prefix_lens if v6 else self._v4_prefix_lens
        if lens:
            addr = int.from_bytes(packed, "big")
            bits = 128 if v6 else 32
            for plen in lens:
                shift = bits - plen
                sub = self._prefix.get((bits, plen, addr >> shift << shift))
                if sub:
                    out.extend(sub.values())
        return out

    def who_all(self, ip: str, ts: float) -> list[Identity]:
        """Every interval holding ``ip`` at ``ts``: one per kind, for the address itself, then
        for its covering prefixes (longest first)."""
        self._sync()
        out = []
        for tl in self._timelines_for(ip):
            iv = tl.at(ts)
            if iv is not None:
                out.append(iv)
        return out

    def who(self, ip: str, ts: float) -> Identity | None:
        """Who held ``ip`` at ``ts``: an address-assigning source first, then the latest start."""
        if self._dirty or self._replayed < len(self._events):
            self._sync()
        by_kind = self._ip.get(ip)
        if by_kind is not None and not (self._v6_prefix_lens if ":" in ip else self._v4_prefix_lens):
            tls: Iterable[_Timeline] = by_kind.values()
        else:
            tls = self._timelines_for(ip)
        best: Identity | None = None
        best_rank = (0, float("-inf"))
        for tl in tls:
            starts = tl.starts
            i = bisect_right(starts, ts) - 1
            if i < 0:
                continue
            iv = tl.items[i]
            end = iv.ts_end
            if end is not None and ts >= end and not (end == iv.ts_start == ts):
                continue
            rank = (_AUTHORITY.get(iv.kind, 0), iv.ts_start)
            if best is None or rank > best_rank:
                best, best_rank = iv, rank
        return best

    def by_teid(self, gtpu_endpoint_ip: str, teid: int, ts: float) -> Identity | None:
        """The session whose tunnel endpoint (``ip``, ``teid``) carried a GTP-U packet at ``ts``.

        The TEID is allocated by the receiving endpoint, so pass the GTP-U packet's outer
        *destination* address.
        """
        if self._dirty or self._replayed < len(self._events):
            self._sync()
        lst = self._teid.get((gtpu_endpoint_ip, teid))
        if lst is None:
            nip = _norm_ip(gtpu_endpoint_ip)
            lst = self._teid.get((nip, teid)) if nip else None
        if not lst:
            return None
        for iv in reversed(lst):
            if iv.active(ts):
                return iv
        return None

    def addresses_of(self, kind: str, value: str, ts: float | None = None) -> list[str]:
        """Addresses held at ``ts`` (any time when None) by an identity.

        ``kind`` names the attribute (``identity``, ``mac``, ``imsi``, ``msisdn``, ``imei``,
        ``hostname``) or a source kind (``radius``, ``dhcp``, ``gtp``...: its identity).
        """
        self._sync()
        if kind in _INDEXED:
            attr, only_kind = kind, None
        elif kind in KINDS or kind in _AUTHORITY:
            attr, only_kind = "identity", kind
        else:
            return []
        if attr == "mac":
            value = normalize_mac(value) or value.lower()
        out: list[str] = []
        for iv in self._attr.get((attr, value), ()):
            if iv.ip is None or (only_kind is not None and iv.kind != only_kind):
                continue
            if getattr(iv, attr) != value:
                continue  # indexed under a value since replaced (cannot happen today; cheap guard)
            if ts is not None and not iv.active(ts):
                continue
            if iv.ip not in out:
                out.append(iv.ip)
        return out

    def intervals(self) -> list[Identity]:
        """Every interval, in start order."""
        self._sync()
        return sorted(self._all, key=lambda iv: (iv.ts_start, iv.ip or ""))

    # ---- output

    def records(self) -> list[dict[str, Any]]:
        """``identity`` records (ts_start/ts_end as float seconds), in start order."""
        return [iv.record() for iv in self.intervals()]

    def table(self) -> pa.Table:
        """The ``identity`` records as an Arrow table with :data:`IDENTITY_SCHEMA`."""
        rows = self.records()
        for r in rows:
            r["ts_start"] = _us(r["ts_start"])
            r["ts_end"] = _us(r["ts_end"])
        schema = IDENTITY_SCHEMA
        raw = pa.schema([pa.field(f.name, pa.int64()) if f.type == TS else f for f in schema])
        t = pa.Table.from_pylist(rows, schema=raw)
        for name in ("ts_start", "ts_end"):
            i = schema.get_field_index(name)
            t = t.set_column(i, schema.field(name), as_timestamps(t.column(name).combine_chunks(), TS))
        return t


def _us(v: float | None) -> int | None:
    if v is None:
        return None
    x = round(v * 1e6)
    return max(min(x, 2**62), -(2**62))
