"""Flows against independent oracles in the shared corpus (tshark, Zeek, nDPI).

* every TCP/UDP conversation tshark lists (``conv_tcp.txt``/``conv_udp.txt``) is found in conn
  with the same packet counts each way (tunnelled traffic counted on the inner flow);
* where Zeek's ``conn.log`` baseline exists, ``conn_state`` and ``history`` agree for >= 95 %;
* ``service`` agrees with nDPI's label for >= 95 % of flows of the protocols we classify.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from conftest import analyzed, capture_id, corpus_captures, needs_corpus

pytestmark = needs_corpus

_CONV = re.compile(r"^(\S+)\s+<->\s+(\S+)\s+(\d+)\s+\d+\s+\S+\s+(\d+)\s+\d+\s+\S+\s+\d+")


def parse_conv(path: Path) -> dict[tuple, tuple[int, int]]:
    """tshark conversation table -> {(a_host, a_port, b_host, b_port): (frames a->b, frames b->a)}.

    tshark sometimes lists one conversation on several lines (RTP set up by SDP is listed per
    direction; ICMP errors quoting a datagram add a line), so lines of the same endpoint pair
    are summed.
    """
    agg: dict[tuple, tuple[int, int]] = {}
    for line in path.read_text().splitlines():
        m = _CONV.match(line)
        if not m:
            continue
        ah, ap = m.group(1).rsplit(":", 1)
        bh, bp = m.group(2).rsplit(":", 1)
        b_to_a, a_to_b = int(m.group(3)), int(m.group(4))
        fwd, rev = (ah, int(ap), bh, int(bp)), (bh, int(bp), ah, int(ap))
        if rev in agg:
            x, y = agg[rev]
            agg[rev] = (x + b_to_a, y + a_to_b)
        else:
            x, y = agg.get(fwd, (0, 0))
            agg[fwd] = (x + a_to_b, y + b_to_a)
    return agg


def conn_index(tables: dict, proto: str) -> dict[tuple, list[tuple[int, int]]]:
    idx: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    conn = tables.get("conn")
    if conn is None:
        return idx
    for r in conn.select(["id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "orig_pkts", "resp_pkts"]).to_pylist():
        if r["proto"] == proto:
            idx[(r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"])].append((r["orig_pkts"], r["resp_pkts"]))
    return idx


CONV_CAPTURES = [c for c in corpus_captures() if any((c.parent / "oracle" / "tshark" / f"conv_{p}.txt").exists() for p in ("tcp", "udp"))]


@pytest.mark.parametrize("capture", CONV_CAPTURES, ids=capture_id)
def test_conversations_match_tshark(capture: Path) -> None:
    tables = analyzed(str(capture))
    missing = []
    for proto in ("tcp", "udp"):
        conv = capture.parent / "oracle" / "tshark" / f"conv_{proto}.txt"
        if not conv.exists():
            continue
        idx = conn_index(tables, proto)
        for (ah, ap, bh, bp), (ab, ba) in parse_conv(conv).items():
            ours = list(idx.get((ah, ap, bh, bp), []))
            if (bh, bp) != (ah, ap):  # a host talking to itself on one port is one key
                ours += [(y, x) for x, y in idx.get((bh, bp, ah, ap), [])]
            total = (sum(x for x, _ in ours), sum(y for _, y in ours))
            if total != (ab, ba):
                missing.append(f"{proto} {ah}:{ap} <-> {bh}:{bp} tshark {ab}/{ba} lawtap {ours}")
    assert not missing, "\n".join(missing[:20])


def _zeek_conn_logs() -> list[Path]:
    return [p for c in corpus_captures() for p in sorted((c.parent / "oracle" / "upstream" / "zeek").glob("*/conn.log"))]


def _read_zeek_log(path: Path) -> list[dict[str, str]]:
    fields: list[str] | None = None
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif not line.startswith("#") and fields:
            rows.append(dict(zip(fields, line.split("\t"))))
    return rows


def test_conn_state_and_history_match_zeek() -> None:
    total = agree = 0
    disagreements = []
    for log in _zeek_conn_logs():
        rows = [r for r in _read_zeek_log(log) if "conn_state" in r and "id.orig_h" in r]
        if not rows:
            continue
        capture = next(c for c in corpus_captures() if c.parent == log.parents[4])
        conn = analyzed(str(capture))["conn"].to_pylist()
        ours = defaultdict(list)
        for r in conn:
            ours[(r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"])].append(r)
        for z in rows:
            total += 1
            key = (z["id.orig_h"], int(z["id.orig_p"]), z["id.resp_h"], int(z["id.resp_p"]))
            if any(r["conn_state"] == z["conn_state"] and (r["history"] or "-") == z.get("history", "-") for r in ours[key]):
                agree += 1
            else:
                disagreements.append((capture.name, key, z["conn_state"], z.get("history"),
                                      [(r["conn_state"], r["history"]) for r in ours[key]]))
    assert total >= 20, "expected the corpus's Zeek conn.log baselines"
    assert agree / total >= 0.95, f"{agree}/{total} agree; {disagreements}"


# nDPI application names -> lawtap service names, for the protocols lawtap classifies.
NDPI_TO_SERVICE = {
    "HTTP": "http", "TLS": "tls", "QUIC": "quic", "DNS": "dns", "MDNS": "mdns", "SSH": "ssh",
    "SMTP": "smtp", "POP3": "pop3", "IMAP": "imap", "FTP_CONTROL": "ftp", "TFTP": "tftp",
    "SIP": "sip", "RTP": "rtp", "RTCP": "rtcp", "STUN": "stun", "IRC": "irc", "Jabber": "xmpp",
    "RADIUS": "radius", "DHCP": "dhcp", "DHCPV6": "dhcpv6", "BitTorrent": "bittorrent",
    "SMBv1": "smb", "SMBv23": "smb", "RDP": "rdp", "Telnet": "telnet", "SNMP": "snmp", "NTP": "ntp",
    "Syslog": "syslog", "Kerberos": "kerberos", "LDAP": "ldap", "MySQL": "mysql",
    "PostgreSQL": "postgresql", "Redis": "redis", "MQTT": "mqtt", "OpenVPN": "openvpn",
    "WireGuard": "wireguard", "SOCKS": "socks", "NetBIOS": "netbios", "SSDP": "ssdp",
    "SMTPS": "tls", "IMAPS": "tls", "POP3S": "tls",
}


def _ndpi_flows(capture: Path) -> list[tuple]:
    path = capture.parent / "oracle" / "ndpi-local" / "flows.tsv"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 7:
            continue
        src, sport, dst, dport, proto, app = parts[0], int(parts[1]), parts[2], int(parts[3]), parts[4].lower(), parts[5]
        rows.append((src, sport, dst, dport, proto, app.split(".")[0]))
    return rows


def test_service_agrees_with_ndpi() -> None:
    per_proto: Counter = Counter()
    per_proto_ok: Counter = Counter()
    misses = []
    for capture in corpus_captures():
        flows = [f for f in _ndpi_flows(capture) if f[5] in NDPI_TO_SERVICE]
        if not flows:
            continue
        conn = analyzed(str(capture)).get("conn")
        services: dict[tuple, set] = defaultdict(set)
        for r in conn.to_pylist() if conn is not None else []:
            if not (r["orig_bytes"] or r["resp_bytes"]):
                continue  # no payload to decide from: nDPI guessed from the port, lawtap doesn't
            a = (r["id.orig_h"], r["id.orig_p"])
            b = (r["id.resp_h"], r["id.resp_p"])
            services[(min(a, b), max(a, b), r["proto"])].add(r["service"])
        for src, sport, dst, dport, proto, app in flows:
            want = NDPI_TO_SERVICE[app]
            a, b = (src, sport), (dst, dport)
            key = (min(a, b), max(a, b), proto)
            if key not in services:
                continue
            got = services[key]
            per_proto[want] += 1
            if want in got:
                per_proto_ok[want] += 1
            else:
                misses.append((capture_id(capture), src, sport, dst, dport, app, got))
    total, ok = sum(per_proto.values()), sum(per_proto_ok.values())
    table = ", ".join(f"{p} {per_proto_ok[p]}/{n}" for p, n in per_proto.most_common())
    assert total > 100
    assert ok / total >= 0.95, f"{ok}/{total} agree ({table}); e.g. {misses[:15]}"
