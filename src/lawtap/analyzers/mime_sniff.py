"""Content sniffing: a small magic-bytes table giving a MIME type for an object's first bytes.

Used for the ``mime_type`` of recovered :class:`~lawtap.analyzers.base.FileObject` s and for
Zeek-style ``*_mime_types`` columns. The type names follow Zeek's ``files.log`` where Zeek has a
signature (``application/x-dosexec``, ``application/x-shockwave-flash``, ``image/x-icon``...),
except ``application/json`` and ``application/gzip`` (the IANA names). Pure and total: any
``bytes`` in, one string out; ``application/octet-stream`` when nothing matches, and
``None`` only for empty input.
"""

from __future__ import annotations

import re

__all__ = ["sniff", "OCTET_STREAM"]

OCTET_STREAM = "application/octet-stream"

# (offset, magic, mime): checked in order, first match wins.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"\x7fELF", "application/x-executable"),
    (0, b"\x1f\x8b\x08", "application/gzip"),
    (0, b"BZh", "application/x-bzip2"),
    (0, b"\xfd7zXZ\x00", "application/x-xz"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"Rar!\x1a\x07", "application/x-rar"),
    (0, b"(\xb5/\xfd", "application/zstd"),
    (0, b"FWS", "application/x-shockwave-flash"),
    (0, b"CWS", "application/x-shockwave-flash"),
    (0, b"ZWS", "application/x-shockwave-flash"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/vnd.ms-office"),
    (0, b"{\\rtf", "text/rtf"),
    (0, b"OggS", "application/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"\x1aE\xdf\xa3", "video/webm"),
    (0, b"FLV\x01", "video/x-flv"),
    (0, b"wOFF", "font/woff"),
    (0, b"wOF2", "font/woff2"),
    (0, b"\x00\x01\x00\x00\x00", "font/ttf"),
    (0, b"OTTO", "font/otf"),
    (0, b"MSCF", "application/vnd.ms-cab-compressed"),
    (0, b"\xed\xab\xee\xdb", "application/x-rpm"),
    (0, b"!<arch>\ndebian", "application/vnd.debian.binary-package"),
    (0, b"SQLite format 3\x00", "application/x-sqlite3"),
    (0, b"-----BEGIN PGP", "application/pgp"),
    (0, b"-----BEGIN CERTIFICATE", "application/x-pem-file"),
    (0, b"\x00asm", "application/wasm"),
    (0, b"dex\n", "application/vnd.android.dex"),
    (257, b"ustar", "application/x-tar"),
)

_WS = b" \t\r\n\x0b\x0c"
_BOM = b"\xef\xbb\xbf"
# Markup that starts a document, after optional XML declaration / comments (Zeek's file-html*).
_HTML_START = re.compile(
    rb"<(?:!doctype\s+html|html|head|body|title|script|meta|iframe|frameset|div|p|table|style|link|br|a\s|h[1-6])[\s>/]",
    re.I,
)
_XML_DECL = re.compile(rb"<\?xml[\s?]", re.I)
_COMMENT = re.compile(rb"<!--.*?-->", re.S)
_JSON_START = re.compile(
    rb'(?:\{\s*(?:"(?:[^"\\]|\\.)*"\s*:|\})|\[\s*(?:[\]\[{"\-0-9]|true|false|null))', re.S
)


def _zip_type(head: bytes) -> str:
    if b"[Content_Types].xml" in head or b"_rels/.rels" in head:
        if b"word/" in head:
            return "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        if b"xl/" in head:
            return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        if b"ppt/" in head:
            return "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    if b"mimetypeapplication/vnd.oasis.opendocument." in head:
        return "application/vnd.oasis.opendocument"
    if b"mimetypeapplication/epub+zip" in head:
        return "application/epub+zip"
    if b"META-INF/MANIFEST.MF" in head or b"META-INF/" in head[:200]:
        return "application/java-archive"
    if b"AndroidManifest.xml" in head or b"classes.dex" in head:
        return "application/vnd.android.package-archive"
    return "application/zip"


def _riff_type(head: bytes) -> str | None:
    kind = head[8:12]
    return {b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo", b"WEBP": "image/webp"}.get(kind)


def _is_text(sample: bytes) -> bool:
    """Mostly printable text (ASCII or UTF-8), no NULs."""
    if not sample or b"\x00" in sample:
        return False
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(sample) - 3:  # only tolerate a multibyte sequence cut at the end
            try:
                sample.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 always decodes
                return False
            ctrl = len(sample) - len(sample.translate(None, _CONTROL))
            high = len(sample) - len(sample.translate(None, _HIGH))
            return ctrl == 0 and high * 3 < len(sample)
        text = sample[: e.start].decode("utf-8")
    # Control characters are ASCII, so counting them in the UTF-8 bytes counts them in the text.
    raw = text.encode("utf-8")
    ctrl = len(raw) - len(raw.translate(None, _CONTROL))
    return ctrl * 50 <= len(text)


# Bytes counted (by deleting them in C: bytes.translate) rather than looped over in Python.
_CONTROL = bytes(b for b in range(0x20) if b not in b"\t\r\n\x0c\x1b")
_HIGH = bytes(range(0x80, 0x100))


def _markup(head: bytes) -> str | None:
    """text/html, application/xml, image/svg+xml or None, after BOM, whitespace, comments, <?xml?>."""
    s = head
    if s.startswith(_BOM):
        s = s[3:]
    s = s.lstrip(_WS)
    if not s.startswith(b"<"):
        return None
    is_xml = False
    for _ in range(8):  # skip prologue: comments, XML declaration, processing instructions
        s = s.lstrip(_WS)
        m = _COMMENT.match(s)
        if m:
            s = s[m.end() :]
            continue
        if _XML_DECL.match(s):
            is_xml = True
            end = s.find(b"?>")
            if end < 0:
                return "application/xml"
            s = s[end + 2 :]
            continue
        break
    s = s.lstrip(_WS)
    if _HTML_START.match(s):
        return "text/html"
    low = s[:200].lower()
    if low.startswith(b"<svg") or (low.startswith(b"<!doctype svg")):
        return "image/svg+xml"
    if low.startswith((b"<rss", b"<feed")):
        return "application/rss+xml" if low.startswith(b"<rss") else "application/atom+xml"
    if is_xml:
        return "application/xml"
    if low.startswith(b"<!doctype"):
        return "text/html" if b"html" in low[:20] else "application/xml"
    return None


def sniff(data: bytes) -> str | None:
    """The MIME type of an object from its leading bytes (``None`` for empty data).

    Like Zeek, only the content counts (a declared Content-Type is not consulted), so
    JavaScript and CSS are ``text/plain``.
    """
    if not data:
        return None
    head = bytes(data[:4096])
    for off, magic, mime in _MAGIC:
        if head.startswith(magic, off):
            return mime
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return _zip_type(head)
    if head.startswith(b"MZ") and len(head) >= 64:
        return "application/x-dosexec"
    if head.startswith(b"RIFF") and len(head) >= 12:
        r = _riff_type(head)
        if r:
            return r
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"qt  ",):
            return "video/quicktime"
        if brand.startswith(b"M4A"):
            return "audio/mp4"
        if brand in (b"heic", b"heix", b"mif1"):
            return "image/heic"
        if brand in (b"avif",):
            return "image/avif"
        return "video/mp4"
    if head.startswith((b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")) and len(head) >= 6 and 0 < head[4] < 64 and head[5] == 0:
        return "image/x-icon"
    if head.startswith(b"BM") and len(head) >= 26 and head[6:10] == b"\x00\x00\x00\x00" and head[14] in (12, 40, 52, 56, 64, 108, 124):
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith(b"\xca\xfe\xba\xbe") and len(head) >= 8 and 0x2D <= head[7] <= 0x45:
        return "application/x-java-applet"
    if head.startswith(b"0\x82") and len(head) >= 8 and head[4:6] == b"0\x82":
        return "application/pkix-cert"  # DER SEQUENCE { SEQUENCE { ... } }: an X.509 certificate
    if not _is_text(head):
        return OCTET_STREAM
    # Text from here on.
    mk = _markup(head)
    if mk:
        return mk
    s = head[3:] if head.startswith(_BOM) else head
    s = s.lstrip(_WS)
    if _JSON_START.match(s):
        return "application/json"
    if s.startswith(b"#!"):
        return "text/x-shellscript" if re.match(rb"#!\s*/\S*(?:sh|bash|zsh|ksh)\b", s) else "application/x-script"
    if s.startswith(b"%!PS"):
        return "application/postscript"
    if s.startswith((b"From ", b"Received:", b"Return-Path:", b"MIME-Version:")):
        return "message/rfc822"
    if s.startswith(b"BEGIN:VCARD"):
        return "text/vcard"
    if s.startswith(b"BEGIN:VCALENDAR"):
        return "text/calendar"
    return "text/plain"
