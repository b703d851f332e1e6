"""Hypothesis: random, truncated and bit-flipped input never makes the IRC, XMPP, FTP, TFTP, SSH
or data-channel analyzers raise, and whatever records they emit fit their Arrow schemas."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap.analyzers.base import ConnInfo
from lawtap.analyzers.ftp import DataChannel, ExpectedChannel, FtpAnalyzer
from lawtap.analyzers.irc import DccChat, IrcAnalyzer
from lawtap.analyzers.ssh import SshAnalyzer
from lawtap.analyzers.tftp import TftpAnalyzer, TftpTransfer
from lawtap.analyzers.xmpp import XmppAnalyzer
from test_chat_ftp_ssh import (
    CLIENT_ALGS,
    SERVER_ALGS,
    XMPP_CLIENT,
    XMPP_SERVER,
    check_schemas,
    kexinit,
    packet,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TCP = ConnInfo("C1", "10.0.0.1", 40000, "10.0.0.2", 21, "tcp")
UDP = ConnInfo("C2", "10.0.0.1", 40000, "10.0.0.2", 69, "udp")

# ---- seeds: valid transcripts (is_orig, bytes) -------------------------------------------

IRC_SEED = [
    (True, b"NICK alice\r\nUSER al 0 * :Alice\r\n"),
    (False, b":srv 001 alice :Welcome\r\n@time=x :bob!b@h PRIVMSG #c :hi\r\n"),
    (True, b"JOIN #c\r\nPRIVMSG #c :hello\r\nPRIVMSG bob :\x01DCC SEND f.bin 167772167 5000 10\x01\r\n"),
    (True, b"PRIVMSG bob :\x01DCC CHAT chat ::1 5001\x01\r\nPART #c :x\r\nQUIT :bye\r\n"),
    (False, b":bob!b@h NICK bobby\r\n:carol!c@h JOIN #c\r\n"),
]
FTP_SEED = [
    (False, b"220-hi\r\n220 ready\r\n"),
    (True, b"USER u\r\nPASS p\r\n"),
    (False, b"331 pw\r\n230 ok\r\n"),
    (True, b"PASV\r\n"),
    (False, b"227 Entering Passive Mode (10,0,0,2,4,1)\r\n"),
    (True, b"RETR f\r\nEPSV\r\nPORT 10,0,0,1,4,2\r\nEPRT |2|::1|5000|\r\n"),
    (False, b"150 Opening (12 bytes)\r\n226 done\r\n229 (|||5001|)\r\n200 ok\r\n200 ok\r\n"),
    (True, b"AUTH TLS\r\n"),
    (False, b"234 go\r\n"),
    (True, b"\x16\x03\x01\x00\x04abcd\x15\x03\x03\x00\x02\x01\x00LIST\r\n"),
]
SSH_SEED = [
    (False, b"SSH-2.0-server\r\n" + packet(kexinit(SERVER_ALGS))),
    (True, b"SSH-2.0-client\r\n" + packet(kexinit(CLIENT_ALGS))),
    (False, packet(bytes([31]) + struct.pack(">I", 15) + struct.pack(">I", 7) + b"ssh-rsa\x00\x00\x00\x00") + packet(bytes([21]))),
    (True, packet(bytes([21]))),
]
XMPP_SEED = [(True, XMPP_CLIENT[:150]), (False, XMPP_SERVER), (True, XMPP_CLIENT[150:])]
DATA_SEED = [(False, b"file contents " * 20), (True, b"\x00\x00\x01\x18"), (False, b"more")]


def tftp_seed() -> list[tuple[bool, bytes]]:
    out = [(True, b"\x00\x01boot.img\x00octet\x00blksize\x00512\x00")]
    out.append((False, b"\x00\x06blksize\x00512\x00"))
    for i in range(1, 4):
        out.append((False, struct.pack(">HH", 3, i) + bytes([i]) * (512 if i < 3 else 7)))
        out.append((True, struct.pack(">HH", 4, i)))
    out.append((False, struct.pack(">HH", 5, 2) + b"denied\x00"))
    return out


TFTP_SEED = tftp_seed()

# ---- strategies ---------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.booleans(), st.binary(max_size=300)),
        st.tuples(st.just("gap"), st.booleans(), st.integers(min_value=1, max_value=5000)),
    ),
    max_size=12,
)


@st.composite
def mutated(draw, seed: list[tuple[bool, bytes]]):
    """A valid transcript, cut short, with bits flipped and bytes inserted, split anywhere."""
    items = list(seed)
    n = draw(st.integers(min_value=0, max_value=len(items)))
    items = items[:n] if draw(st.booleans()) else items
    out = []
    for is_orig, b in items:
        b = bytearray(b)
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            if b:
                i = draw(st.integers(min_value=0, max_value=len(b) - 1))
                b[i] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        if b and draw(st.booleans()):
            b = b[: draw(st.integers(min_value=0, max_value=len(b)))]
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            b += draw(st.binary(min_size=1, max_size=20))
        step = draw(st.integers(min_value=1, max_value=64))
        for j in range(0, len(b), step):
            out.append(("feed", is_orig, bytes(b[j : j + step])))
        if draw(st.integers(min_value=0, max_value=7)) == 0:
            out.append(("gap", is_orig, draw(st.integers(min_value=1, max_value=100))))
    return out


@st.composite
def mutated_datagrams(draw, seed: list[tuple[bool, bytes]]):
    out = []
    for is_orig, b in seed:
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            continue  # lost
        b = bytearray(b)
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            if b:
                i = draw(st.integers(min_value=0, max_value=len(b) - 1))
                b[i] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        if b and draw(st.booleans()):
            b = b[: draw(st.integers(min_value=0, max_value=len(b)))]
        out.append(("dgram", is_orig, bytes(b)))
        if draw(st.integers(min_value=0, max_value=6)) == 0:
            out.append(("dgram", is_orig, bytes(b)))  # duplicate
    return out


def run(an, script) -> None:
    ts = 1.0
    for op in script:
        ts += 0.5
        if getattr(an, "done", False):
            break
        if op[0] == "feed":
            an.feed(op[1], op[2], ts)
        elif op[0] == "gap":
            an.gap(op[1], op[2], ts)
        else:
            an.datagram(op[1], op[2], ts)
    an.finish(ts)
    recs, files, weirds = an.drain()
    check_schemas(recs)
    for f in files:
        assert isinstance(f.data, bytes)
    for w in weirds:
        assert isinstance(w[0], str) and isinstance(w[1], str)
    for ch in getattr(an, "expected_channels", []):
        assert ch.resp_p is None or 0 <= ch.resp_p <= 65535


def channel(source: str, proto: str = "tcp") -> ExpectedChannel:
    ch = ExpectedChannel(resp_h="10.0.0.2", resp_p=21 if proto == "tcp" else 69, source=source, proto=proto, filename="f", direction="resp")
    ch.meta.update(dcc_from="a", dcc_to="b")
    return ch


STREAM_ANALYZERS = {
    "irc": (lambda: IrcAnalyzer(TCP), IRC_SEED),
    "xmpp": (lambda: XmppAnalyzer(TCP), XMPP_SEED),
    "ftp": (lambda: FtpAnalyzer(TCP), FTP_SEED),
    "ssh": (lambda: SshAnalyzer(TCP), SSH_SEED),
    "data": (lambda: DataChannel(TCP, channel("FTP_DATA")), DATA_SEED),
    "dcc_chat": (lambda: DccChat(TCP, channel("IRC_DCC_CHAT")), IRC_SEED),
}


def _random_test(name):
    make, _ = STREAM_ANALYZERS[name]

    @FAST
    @given(ops)
    def t(script):
        run(make(), script)

    t.__name__ = f"test_{name}_random_input_never_raises"
    return t


def _mutated_test(name):
    make, seed = STREAM_ANALYZERS[name]

    @FAST
    @given(mutated(seed))
    def t(script):
        run(make(), script)

    t.__name__ = f"test_{name}_mutated_transcript_never_raises"
    return t


for _name in STREAM_ANALYZERS:
    globals()[f"test_{_name}_random_input_never_raises"] = _random_test(_name)
    globals()[f"test_{_name}_mutated_transcript_never_raises"] = _mutated_test(_name)


datagrams = st.lists(st.tuples(st.just("dgram"), st.booleans(), st.binary(max_size=600)), max_size=15)
tftp_like = st.lists(
    st.tuples(
        st.just("dgram"),
        st.booleans(),
        st.builds(lambda op, rest: bytes([0, op]) + rest, st.integers(min_value=0, max_value=8), st.binary(max_size=80)),
    ),
    max_size=20,
)


@FAST
@given(st.one_of(datagrams, tftp_like))
def test_tftp_request_random_datagrams_never_raise(script):
    run(TftpAnalyzer(UDP), script)


@FAST
@given(st.one_of(datagrams, tftp_like), st.booleans())
def test_tftp_transfer_random_datagrams_never_raise(script, with_channel):
    run(TftpTransfer(UDP, channel("TFTP", "udp") if with_channel else None), script)


@FAST
@given(mutated_datagrams(TFTP_SEED))
def test_tftp_mutated_exchange_never_raises(script):
    req = TftpAnalyzer(UDP)
    run(req, [op for op in script if op[1]][:1])
    tr = TftpTransfer(UDP, req.expected_channels[0] if req.expected_channels else None)
    run(tr, script[1:])


@FAST
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=200))
def test_xmpp_random_xmlish_text_never_raises(body, step):
    junk = b"<stream:stream><message to='a'><body>" + body + b"</body></message><iq/>"
    run(XmppAnalyzer(TCP), [("feed", True, junk[i : i + step]) for i in range(0, len(junk), step)])
