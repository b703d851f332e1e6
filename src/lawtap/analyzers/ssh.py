"""SSH (RFC 4253): version strings, the clear-text key exchange, HASSH fingerprints.

Each direction starts with an identification line (``SSH-2.0-OpenSSH_8.9``; a server may send
other lines before it), then binary packets ``uint32 length | byte padding | payload | padding``
that stay unencrypted until that direction's ``SSH_MSG_NEWKEYS`` (21). The analyzer reads:

* ``SSH_MSG_KEXINIT`` (20): the ten algorithm name-lists. HASSH (Salesforce) is
  ``md5("kex;enc_c2s;mac_c2s;comp_c2s")`` of the client's lists; HASSHServer is
  ``md5("kex;enc_s2c;mac_s2c;comp_s2c")`` of the server's. The negotiated algorithms are the
  first client choice the server also offers (RFC 4253 7.1); ``cipher_alg``/``mac_alg``/
  ``compression_alg`` are the client-to-server ones, as in Zeek.
* the server's key exchange reply (31, or 33 for DH group exchange): its host key blob gives
  ``host_key`` (MD5 fingerprint, colon-separated, as Zeek logs it).

One ``ssh`` record per connection (Zeek's ``ssh.log`` names plus the HASSH fields), written
when both directions have sent NEWKEYS (the analyzer is then ``done``) or at ``finish``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, StreamAnalyzer
from lawtap.analyzers.chat import schema_with
from lawtap.analyzers.ftp import decode_text

__all__ = ["SshAnalyzer", "SSH_SCHEMA", "RECORD_SCHEMAS", "ANALYZERS", "parse_kexinit", "hassh"]

SSH_SCHEMA = schema_with(
    [
        pa.field("version", pa.uint8()),
        pa.field("auth_success", pa.bool_()),
        pa.field("client", pa.string()),
        pa.field("server", pa.string()),
        pa.field("cipher_alg", pa.string()),
        pa.field("mac_alg", pa.string()),
        pa.field("compression_alg", pa.string()),
        pa.field("kex_alg", pa.string()),
        pa.field("host_key_alg", pa.string()),
        pa.field("host_key", pa.string()),
        pa.field("hassh", pa.string()),
        pa.field("hasshServer", pa.string()),
        pa.field("hassh_algorithms", pa.string()),
        pa.field("hasshServer_algorithms", pa.string()),
    ]
)

RECORD_SCHEMAS = {"ssh": SSH_SCHEMA}

MSG_KEXINIT, MSG_NEWKEYS = 20, 21
MSG_KEX_REPLY = 31  # KEXDH_REPLY / KEX_ECDH_REPLY / KEX_DH_GEX_GROUP (GEX: group, not a key)
MSG_KEX_DH_GEX_REPLY = 33
MAX_BANNER_AREA = 8192  # bytes of pre-banner lines accepted
MAX_PACKET = 256 * 1024  # RFC 4253 asks for 35000; be lenient with big KEXINITs
MAX_WEIRDS = 32

_NAMES = (
    "kex",
    "host_key",
    "enc_c2s",
    "enc_s2c",
    "mac_c2s",
    "mac_s2c",
    "comp_c2s",
    "comp_s2c",
    "lang_c2s",
    "lang_s2c",
)


def parse_kexinit(payload: bytes) -> dict[str, list[str]] | None:
    """The name-lists of a KEXINIT payload (starting with the message byte 20), or None."""
    if len(payload) < 17 or payload[0] != MSG_KEXINIT:
        return None
    pos = 17  # message byte + 16-byte cookie
    out: dict[str, list[str]] = {}
    for name in _NAMES:
        if pos + 4 > len(payload):
            return None
        (ln,) = struct.unpack_from(">I", payload, pos)
        pos += 4
        if pos + ln > len(payload):
            return None
        raw = payload[pos : pos + ln]
        pos += ln
        text = decode_text(raw)
        out[name] = [x for x in text.split(",")] if text else []
    return out


def hassh(lists: dict[str, list[str]], server: bool) -> tuple[str, str]:
    """``(md5 hex, algorithm string)`` of HASSH (client) or HASSHServer (server)."""
    d = "s2c" if server else "c2s"
    algs = ";".join(",".join(lists[k]) for k in ("kex", f"enc_{d}", f"mac_{d}", f"comp_{d}"))
    return hashlib.md5(algs.encode("utf-8", "surrogateescape")).hexdigest(), algs


def _negotiate(client: list[str], server: list[str]) -> str | None:
    s = set(server)
    for a in client:
        if a in s:
            return a
    return None


class _Dir:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.banner: str | None = None
        self.pre_banner = 0
        self.kexinit: dict[str, list[str]] | None = None
        self.newkeys = False
        self.stopped = False  # NEWKEYS seen or unparseable: nothing more in this direction


class SshAnalyzer(StreamAnalyzer):
    service = "ssh"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.done = False
        self._d = {True: _Dir(), False: _Dir()}
        self._host_key: str | None = None
        self._emitted = False
        self._ts: float | None = None

    def _weird(self, name: str, detail: str = "") -> None:
        if len(self.weirds) < MAX_WEIRDS:
            self.weirds.append((name, detail[:200]))

    # ---- input ----
    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.done or not data:
            return
        if self._ts is None:
            self._ts = ts
        d = self._d[is_orig]
        if d.stopped:
            return
        d.buf += data
        if d.banner is None:
            self._banner(is_orig, d)
        if d.banner is not None and not d.stopped:
            self._packets(is_orig, d)
        self._check_done()

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        d = self._d[is_orig]
        if not d.stopped:
            self._weird("ssh_content_gap", f"{'client' if is_orig else 'server'} {length} bytes")
            d.stopped = True
            d.buf.clear()
        self._check_done()

    def finish(self, ts: float) -> None:
        self._emit()

    # ---- parsing ----
    def _banner(self, is_orig: bool, d: _Dir) -> None:
        while True:
            nl = d.buf.find(b"\n")
            if nl < 0:
                if len(d.buf) > 255 and not d.buf.startswith(b"SSH-"):
                    # not a line protocol at all (or a huge pre-banner line)
                    d.pre_banner += len(d.buf)
                    d.buf.clear()
                    if d.pre_banner > MAX_BANNER_AREA:
                        self._weird("ssh_no_banner", "client" if is_orig else "server")
                        d.stopped = True
                elif len(d.buf) > 1024:
                    self._weird("ssh_banner_too_long", "client" if is_orig else "server")
                    d.banner = decode_text(bytes(d.buf[:255]))
                    d.buf.clear()
                    d.stopped = True
                return
            line = bytes(d.buf[:nl]).rstrip(b"\r")
            del d.buf[: nl + 1]
            if line.startswith(b"SSH-"):
                d.banner = decode_text(line[:255])
                if not (line.startswith(b"SSH-2.") or line.startswith(b"SSH-1.99")):
                    d.stopped = True  # SSH-1: no KEXINIT to read
                return
            d.pre_banner += nl + 1
            if d.pre_banner > MAX_BANNER_AREA:
                self._weird("ssh_no_banner", "client" if is_orig else "server")
                d.stopped = True
                d.buf.clear()
                return

    def _packets(self, is_orig: bool, d: _Dir) -> None:
        buf = d.buf
        pos = 0
        while len(buf) - pos >= 5 and not d.stopped:
            (plen,) = struct.unpack_from(">I", buf, pos)
            pad = buf[pos + 4]
            if plen < 5 or plen > MAX_PACKET or pad >= plen:
                self._weird("ssh_bad_packet_length", str(plen))
                d.stopped = True
                break
            if len(buf) - pos < 4 + plen:
                break
            payload = bytes(buf[pos + 5 : pos + 4 + plen - pad])
            pos += 4 + plen
            self._message(is_orig, d, payload)
        del buf[:pos]
        if d.stopped:
            buf.clear()

    def _message(self, is_orig: bool, d: _Dir, payload: bytes) -> None:
        if not payload:
            return
        t = payload[0]
        if t == MSG_KEXINIT and d.kexinit is None:
            lists = parse_kexinit(payload)
            if lists is None:
                self._weird("ssh_bad_kexinit", "client" if is_orig else "server")
            else:
                d.kexinit = lists
        elif t == MSG_NEWKEYS:
            d.newkeys = True
            d.stopped = True
        elif t in (MSG_KEX_REPLY, MSG_KEX_DH_GEX_REPLY) and not is_orig and self._host_key is None:
            self._kex_reply(t, payload)

    def _kex_reply(self, t: int, payload: bytes) -> None:
        # string K_S (host key blob) first; for GEX, 31 is the group (mpint p), not a key
        server = self._d[False].kexinit
        client = self._d[True].kexinit
        kex = _negotiate(client["kex"], server["kex"]) if client and server else None
        if t == MSG_KEX_REPLY and kex is not None and kex.startswith("diffie-hellman-group-exchange"):
            return
        if len(payload) < 5:
            return
        (ln,) = struct.unpack_from(">I", payload, 1)
        if ln < 4 or 5 + ln > len(payload):
            return
        blob = payload[5 : 5 + ln]
        (tl,) = struct.unpack_from(">I", blob, 0)
        if tl == 0 or tl + 4 > len(blob) or not blob[4 : 4 + tl].isascii():
            return  # not a key blob (e.g. a GEX group)
        h = hashlib.md5(blob).hexdigest()
        self._host_key = ":".join(h[i : i + 2] for i in range(0, 32, 2))

    def _check_done(self) -> None:
        if self._d[True].stopped and self._d[False].stopped and not self.done:
            self._emit()
            self.done = True

    # ---- output ----
    def _emit(self) -> None:
        if self._emitted:
            return
        c, s = self._d[True], self._d[False]
        if c.banner is None and s.banner is None:
            return
        self._emitted = True
        version = None
        for b in (c.banner, s.banner):
            if b is not None:
                proto = b[4:].split("-", 1)[0]
                v = 1 if proto.startswith("1.") and proto != "1.99" else 2 if proto.startswith(("2.", "1.99")) else None
                version = v if version is None else max(version, v or 0)
        rec: dict[str, Any] = {
            "version": version,
            "auth_success": None,
            "client": c.banner,
            "server": s.banner,
            "cipher_alg": None,
            "mac_alg": None,
            "compression_alg": None,
            "kex_alg": None,
            "host_key_alg": None,
            "host_key": self._host_key,
            "hassh": None,
            "hasshServer": None,
            "hassh_algorithms": None,
            "hasshServer_algorithms": None,
        }
        if self._ts is not None:
            rec["ts"] = self._ts
        if c.kexinit is not None:
            rec["hassh"], rec["hassh_algorithms"] = hassh(c.kexinit, server=False)
        if s.kexinit is not None:
            rec["hasshServer"], rec["hasshServer_algorithms"] = hassh(s.kexinit, server=True)
        if c.kexinit is not None and s.kexinit is not None:
            ck, sk = c.kexinit, s.kexinit
            rec["kex_alg"] = _negotiate(ck["kex"], sk["kex"])
            rec["host_key_alg"] = _negotiate(ck["host_key"], sk["host_key"])
            rec["cipher_alg"] = _negotiate(ck["enc_c2s"], sk["enc_c2s"])
            rec["mac_alg"] = _negotiate(ck["mac_c2s"], sk["mac_c2s"])
            rec["compression_alg"] = _negotiate(ck["comp_c2s"], sk["comp_c2s"])
        self.records.append(("ssh", rec))


ANALYZERS = {"ssh": SshAnalyzer}
