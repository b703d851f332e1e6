"""The decoder and flow table on captures crafted layer by layer (lawtap.craft).

Each case builds one conversation inside a given link layer or tunnel, runs the real pipeline
and checks the inner flow (packet counts each way, Zeek state and history) and the tunnel.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from lawtap import craft
from lawtap.pipeline import Analyzer, run_salt
from lawtap.sources import open_capture

CLIENT, SERVER = "10.0.0.1", "192.0.2.80"
CLIENT6, SERVER6 = "2001:db8::1", "2001:db8:1::80"


def analyze_frames(tmp_path: Path, frames, linktype: int = 1, name: str = "t.pcap") -> dict[str, pa.Table]:
    path = tmp_path / name
    craft.write_pcap(path, frames, linktype=linktype)
    an = Analyzer(run_salt([path]), [str(path)])
    out: dict[str, list] = {}
    for batch in open_capture(path).batches():
        for t, rb in an.process(batch):
            out.setdefault(t, []).append(rb)
    for t, rb in an.finish():
        out.setdefault(t, []).append(rb)
    tables = {k: pa.Table.from_batches(v) for k, v in out.items()}
    tables["stats"] = an.stats  # type: ignore[assignment]
    return tables


def http_session(client=CLIENT, server=SERVER, **opts) -> craft.TcpSession:
    s = craft.TcpSession(client, server, 40001, 80, **opts)
    s.handshake().client_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").server_send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").close()
    return s


def conn_rows(tables) -> list[dict]:
    return tables["conn"].to_pylist() if "conn" in tables else []


def only_flow(tables, port: int = 80) -> dict:
    rows = [r for r in conn_rows(tables) if r["id.resp_p"] == port]
    assert len(rows) == 1, rows
    return rows[0]


LINKS = {
    "ethernet": (craft.EthernetLink("02:00:00:00:00:01", "02:00:00:00:00:02"), 1),
    "vlan": (craft.EthernetLink("02:00:00:00:00:01", "02:00:00:00:00:02", vlans=(100,)), 1),
    "qinq": (craft.EthernetLink("02:00:00:00:00:01", "02:00:00:00:00:02", vlans=(200, 300)), 1),
    "mpls": (craft.EthernetLink("02:00:00:00:00:01", "02:00:00:00:00:02", mpls_labels=(16, 17)), 1),
    "pppoe": (craft.EthernetLink("02:00:00:00:00:01", "02:00:00:00:00:02", pppoe_session_id=7), 1),
    "raw": (craft.RawLink(), 101),
    "sll": (craft.SllLink(), 113),
    "sll2": (craft.Sll2Link(), 276),
    "null": (craft.NullLink(False), 0),
    "loop": (craft.LoopLink(False), 108),
}


@pytest.mark.parametrize("name", list(LINKS))
def test_link_layers(tmp_path: Path, name: str) -> None:
    link, linktype = LINKS[name]
    s = http_session(link=link)
    tables = analyze_frames(tmp_path, s.frames, linktype)
    row = only_flow(tables)
    assert (row["id.orig_h"], row["id.orig_p"], row["id.resp_h"], row["id.resp_p"]) == (CLIENT, 40001, SERVER, 80)
    assert row["conn_state"] == "SF"
    assert row["history"].startswith("ShA")
    assert row["orig_pkts"] + row["resp_pkts"] == len(s.frames)
    assert row["orig_bytes"] == len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert row["resp_bytes"] == len(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    if name == "vlan":
        assert row["vlan"] == 100 and row["inner_vlan"] is None
    if name == "qinq":
        assert (row["vlan"], row["inner_vlan"]) == (200, 300)
    assert tables["stats"].malformed == 0


TUNNELS = {
    "gre": (lambda: craft.GreTunnel("172.16.0.1", "172.16.0.2", key=5), "Tunnel::GRE", None),
    "ipip": (lambda: craft.IpIpTunnel("172.16.0.1", "172.16.0.2"), "Tunnel::IP", None),
    "gtpu": (lambda: craft.GtpuTunnel("172.16.0.1", "172.16.0.2", teid_up=1, teid_down=2), "Tunnel::GTPv1", "gtp-u"),
    "vxlan": (lambda: craft.VxlanTunnel("172.16.0.1", "172.16.0.2", vni=42), "Tunnel::VXLAN", "vxlan"),
    "6in4": (lambda: craft.IpIpTunnel("172.16.0.1", "172.16.0.2"), "Tunnel::IP", None),
}


@pytest.mark.parametrize("name", list(TUNNELS))
def test_tunnels_decapsulated_with_outer_kept(tmp_path: Path, name: str) -> None:
    make, tunnel_type, outer_service = TUNNELS[name]
    client, server = (CLIENT6, SERVER6) if name == "6in4" else (CLIENT, SERVER)
    s = http_session(client, server, tunnel=make())
    tables = analyze_frames(tmp_path, s.frames)
    row = only_flow(tables)
    assert row["conn_state"] == "SF"
    assert row["orig_pkts"] + row["resp_pkts"] == len(s.frames)
    tunnels = tables["tunnel"].to_pylist()
    # VXLAN picks a UDP source port per direction, so each direction is its own outer flow.
    assert len(tunnels) == (2 if name == "vxlan" else 1)
    assert {t["tunnel_type"] for t in tunnels} == {tunnel_type}
    assert sum(t["packets"] for t in tunnels) == len(s.frames)
    assert row["tunnel_parents"][0] in {t["uid"] for t in tunnels}
    outer = [r for r in conn_rows(tables) if r["uid"] in {t["uid"] for t in tunnels}]
    if outer_service:  # UDP tunnels are connections too (as in Zeek), counted per packet
        assert len(outer) == len(tunnels) and {o["service"] for o in outer} == {outer_service}
        assert sum(o["orig_pkts"] + o["resp_pkts"] for o in outer) == len(s.frames)
    else:
        assert outer == []


def test_ipv6_extension_headers(tmp_path: Path) -> None:
    payload = craft.udp(5000, 53, b"\x12\x34" + b"\x00" * 10, src_ip=CLIENT6, dst_ip=SERVER6)
    pkt = craft.ipv6(CLIENT6, SERVER6, 17, payload,
                     ext_headers=[craft.HopByHop(b""), craft.DestOptions(b""), craft.Routing([SERVER6], segments_left=0)])
    frame = craft.ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x86DD, pkt)
    tables = analyze_frames(tmp_path, [(1.0, frame)])
    row = only_flow(tables, 53)
    assert (row["id.orig_h"], row["proto"], row["orig_pkts"], row["conn_state"]) == (CLIENT6, "udp", 1, "S0")


@pytest.mark.parametrize("family", [4, 6])
def test_fragments_are_reassembled(tmp_path: Path, family: int) -> None:
    src, dst = (CLIENT, SERVER) if family == 4 else (CLIENT6, SERVER6)
    data = bytes(range(256)) * 12
    dgram = craft.ip(src, dst, 17, craft.udp(4000, 4001, data, src_ip=src, dst_ip=dst), ident=77)
    frags = craft.ipv4_fragments(dgram, 600) if family == 4 else craft.ipv6_fragments(dgram, 600, ident=9)
    assert len(frags) > 3
    ethertype = 0x0800 if family == 4 else 0x86DD
    # out of order, with one fragment duplicated: the datagram still counts once
    order = [frags[-1]] + frags[:-1] + [frags[1]]
    frames = [(1.0 + i * 0.001, craft.ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", ethertype, f)) for i, f in enumerate(order)]
    tables = analyze_frames(tmp_path, frames)
    row = only_flow(tables, 4001)
    assert row["orig_pkts"] == 1
    assert row["orig_bytes"] == len(data)
    assert tables["stats"].reassembled == 1


def test_icmp_echo_is_one_connection(tmp_path: Path) -> None:
    p = craft.PingExchange(CLIENT, SERVER)
    p.ping(count=3)
    tables = analyze_frames(tmp_path, p.frames)
    rows = conn_rows(tables)
    assert len(rows) == 1
    r = rows[0]
    assert (r["proto"], r["id.orig_h"], r["id.orig_p"], r["id.resp_p"], r["orig_pkts"], r["resp_pkts"]) == ("icmp", CLIENT, 8, 0, 3, 3)


def test_sctp_ports(tmp_path: Path) -> None:
    pkt = craft.ip(CLIENT, SERVER, 132, craft.sctp(2905, 2905, craft.sctp_init(1, 1000)))
    frame = craft.ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, pkt)
    rows = conn_rows(analyze_frames(tmp_path, [(1.0, frame)]))
    assert [(r["proto"], r["id.orig_p"], r["id.resp_p"]) for r in rows] == [("sctp", 2905, 2905)]


def test_rejected_and_unanswered(tmp_path: Path) -> None:
    a = craft.TcpSession(CLIENT, SERVER, 40010, 81)
    a.refused()
    b = craft.TcpSession(CLIENT, SERVER, 40011, 82, start=10.0)
    b.syn_timeout(retries=0)
    tables = analyze_frames(tmp_path, craft.merge_frames(a.frames, b.frames))
    states = {r["id.resp_p"]: (r["conn_state"], r["history"]) for r in conn_rows(tables)}
    assert states[81] == ("REJ", "Sr")
    assert states[82] == ("S0", "S")


def test_midstream_pickup_and_port_reuse(tmp_path: Path) -> None:
    a = craft.TcpSession(CLIENT, SERVER, 40020, 80, midstream=True)
    a.client_send(b"x" * 100).server_send(b"y" * 50).close()
    b = http_session(start=100.0)  # same 5-tuple as c below, reused after a clean close
    c = http_session(start=100.5)
    tables = analyze_frames(tmp_path, craft.merge_frames(a.frames, b.frames, c.frames))
    rows = conn_rows(tables)
    mid = [r for r in rows if r["id.orig_p"] == 40020]
    assert len(mid) == 1 and mid[0]["history"][0] == "D" and mid[0]["conn_state"] == "SF"
    reused = [r for r in rows if r["id.orig_p"] == 40001]
    assert len(reused) == 2 and all(r["conn_state"] == "SF" for r in reused)


def test_udp_reply_first_is_flipped(tmp_path: Path) -> None:
    u = craft.UdpExchange(CLIENT, SERVER, 33333, 53)
    u.send(b"\x00" * 20, from_client=False)
    rows = conn_rows(analyze_frames(tmp_path, u.frames))
    assert [(r["id.orig_h"], r["id.resp_p"], r["history"], r["conn_state"]) for r in rows] == [(CLIENT, 53, "^d", "SHR")]


def test_malformed_packets_become_weirds(tmp_path: Path) -> None:
    good = http_session().frames
    bad_ip = craft.ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, b"\x45\x00\x00")
    bad_tcp = craft.ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                             craft.ipv4(CLIENT, SERVER, 6, b"\x00" * 8))
    frames = good + [(50.0, bad_ip), (51.0, bad_tcp)]
    tables = analyze_frames(tmp_path, frames)
    names = sorted(tables["weird"].column("name").to_pylist())
    assert names == ["truncated_IP", "truncated_header"]
    assert only_flow(tables)["conn_state"] == "SF"  # the rest is unaffected


def test_demo_capture_matches_generator_manifest(tmp_path: Path) -> None:
    from lawtap.generate import generate_capture

    path = tmp_path / "demo.pcap"
    manifest = generate_capture(path, 3, 120)
    an = Analyzer(run_salt([path]), [str(path)])
    out = []
    for batch in open_capture(path).batches():
        out += [rb for t, rb in an.process(batch) if t == "conn"]
    out += [rb for t, rb in an.finish() if t == "conn"]
    rows = pa.Table.from_batches(out).to_pylist()
    index = {}
    for r in rows:
        index.setdefault((r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"], r["proto"]), []).append(r)
    for f in manifest["flows"]:
        key = (f["client"], f["client_port"], f["server"], f["server_port"], f["transport"])
        got = index.get(key, [])
        if f["transport"] in ("icmp", "icmpv6"):
            continue  # ICMP "ports" are types, checked in test_icmp_echo_is_one_connection
        assert got, f"missing flow {f}"
        if "fragmented" in f["encap"] or f["kind"] == "udp_fragmented":
            continue  # the manifest counts fragments; flows count reassembled datagrams
        assert sum(r["orig_pkts"] + r["resp_pkts"] for r in got) == f["packets"], (f, got)
