"""G.711 (PCMU / PCMA) decoding and WAV writing, vectorised with numpy lookup tables.

No ``audioop`` (removed from Python 3.13): the two 256-entry expansion tables are computed from
the ITU-T G.711 expansion rules (the same reconstruction values as the ITU G.191 reference code,
Sun's public-domain ``g711.c`` and SoX's ``lsx_ulaw2linear16`` / ``lsx_alaw2linear16`` tables),
and decoding a payload is two ``bytes.translate`` passes through them (see :func:`_expand`).

* µ-law: 14-bit linear values scaled to 16 bits (range -32124..32124, multiples of 4);
  0xFF and 0x7F both decode to 0.
* A-law: 13-bit linear values scaled to 16 bits (range -32256..32256, multiples of 8);
  even bits are inverted (XOR 0x55) before expansion.

WAVs are built in memory (the header the stdlib :mod:`wave` module writes, then the samples):
8 kHz, 16-bit little-endian signed PCM, mono per RTP stream, stereo (caller left, callee right)
per call; :func:`read_wav` reads them back with :mod:`wave`.
"""

from __future__ import annotations

import hashlib
import io
import struct
import wave

import numpy as np

from lawtap.jit import njit

SAMPLE_RATE = 8000

_CODES = np.arange(256, dtype=np.int32)


def _ulaw_table() -> np.ndarray:
    u = ~_CODES & 0xFF  # µ-law code words are transmitted complemented
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84  # bias 132 added then removed
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = _CODES ^ 0x55  # even bits inverted on the line
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    seg0 = (mantissa << 4) + 8  # segment 0: linear, half-step reconstruction
    segn = ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    magnitude = np.where(exponent == 0, seg0, segn)
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW_TO_LINEAR: np.ndarray = _ulaw_table()
ALAW_TO_LINEAR: np.ndarray = _alaw_table()
ULAW_TO_LINEAR.setflags(write=False)
ALAW_TO_LINEAR.setflags(write=False)

_TABLES = {"PCMU": ULAW_TO_LINEAR, "PCMA": ALAW_TO_LINEAR}
G711_CODECS = frozenset(_TABLES)


def _u8(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).ravel()
    return np.frombuffer(data, dtype=np.uint8)


def _byte_planes(table: np.ndarray) -> tuple[bytes, bytes]:
    """The low and the high byte of each code's little-endian sample, as ``bytes.translate``
    tables."""
    le = table.astype("<i2").view(np.uint8)
    return le[0::2].tobytes(), le[1::2].tobytes()


_PLANES = {name: _byte_planes(table) for name, table in _TABLES.items()}
_WRITABLE_TABLES = {name: table.copy() for name, table in _TABLES.items()}  # (kernel arguments)


@njit(cache=True, nogil=True)
def expand_codes(codes, table, out):
    """``out[k] = table[codes[k]]``: G.711 code words to samples."""
    for k in range(codes.shape[0]):
        out[k] = table[codes[k]]


def _expand(data: bytes | bytearray | memoryview | np.ndarray, planes: tuple[bytes, bytes],
            table: np.ndarray) -> np.ndarray:
    """Decode: a writable uint8 array (what the RTP path holds) in a kernel; anything else with
    two ``bytes.translate`` passes (the samples' low and high bytes) written interleaved. Both
    are several times faster than a numpy lookup (``take`` or fancy indexing), which first
    widens every code to a 64-bit index."""
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1 and data.flags.writeable:
        out = np.empty(data.shape[0], dtype=np.int16)
        expand_codes(np.ascontiguousarray(data), table, out)
        return out
    raw = data if isinstance(data, (bytes, bytearray)) else _u8(data).tobytes()
    out = np.empty(len(raw), dtype="<i2")
    halves = out.view(np.uint8)
    halves[0::2] = np.frombuffer(raw.translate(planes[0]), dtype=np.uint8)
    halves[1::2] = np.frombuffer(raw.translate(planes[1]), dtype=np.uint8)
    return out.astype(np.int16, copy=False)


def decode_ulaw(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """µ-law bytes -> int16 samples."""
    return _expand(data, _PLANES["PCMU"], _WRITABLE_TABLES["PCMU"])


def decode_alaw(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A-law bytes -> int16 samples."""
    return _expand(data, _PLANES["PCMA"], _WRITABLE_TABLES["PCMA"])


def decode(data: bytes | bytearray | memoryview | np.ndarray, codec: str) -> np.ndarray:
    """Decode ``codec`` ("PCMU" or "PCMA", case-insensitive) bytes to int16 samples."""
    name = codec.upper()
    planes = _PLANES.get(name)
    if planes is None:
        raise ValueError(f"not a G.711 codec: {codec!r}")
    return _expand(data, planes, _WRITABLE_TABLES[name])


def is_g711(codec: str | None) -> bool:
    return bool(codec) and codec.upper() in _TABLES  # type: ignore[union-attr]


def pcm_bytes(samples: np.ndarray) -> bytes:
    """int16 samples -> 16-bit little-endian bytes (what ``sox ... -t s16 -L`` writes)."""
    return np.asarray(samples, dtype="<i2").tobytes()


def pcm_sha256(data: bytes, codec: str) -> str:
    """SHA-256 of the decoded 16-bit little-endian PCM of a G.711 byte string."""
    return hashlib.sha256(pcm_bytes(decode(data, codec))).hexdigest()


# ---- encoders (nearest reconstruction level; used to craft test audio) ----


def _encoder(table: np.ndarray) -> np.ndarray:
    """A 65536-entry int16 -> code table choosing the code whose decoded value is nearest."""
    order = np.argsort(table.astype(np.int32), kind="stable")
    levels = table.astype(np.int32)[order]
    # Equal levels (µ-law has two zeros): keep one code per level.
    keep = np.concatenate(([True], np.diff(levels) != 0))
    levels, codes = levels[keep], order[keep]
    mids = (levels[:-1] + levels[1:]) / 2.0
    x = np.arange(-32768, 32768, dtype=np.int32)
    return codes[np.searchsorted(mids, x, side="left")].astype(np.uint8)


_ENC: dict[str, np.ndarray] = {}


def encode(samples: np.ndarray, codec: str) -> bytes:
    """int16 samples -> G.711 bytes of ``codec`` (nearest reconstruction level)."""
    key = codec.upper()
    if key not in _TABLES:
        raise ValueError(f"not a G.711 codec: {codec!r}")
    enc = _ENC.get(key)
    if enc is None:
        enc = _ENC[key] = _encoder(_TABLES[key])
    s = np.asarray(samples, dtype=np.int32)
    return enc[np.clip(s, -32768, 32767) + 32768].tobytes()


# ---- WAV ----


def wav_bytes(samples: np.ndarray, channels: int = 1, rate: int = SAMPLE_RATE) -> bytes:
    """A RIFF/WAVE file (16-bit signed PCM) in memory.

    ``samples`` is int16, shape ``(n,)`` for mono or ``(n, channels)`` (interleaved on write).
    The 44-byte header the ``wave`` module writes, then the samples: built directly, since the
    module's in-memory file copied every call's audio twice more (316 MB of WAVs on the 1 GB
    workload); ``tests/test_voip.py`` checks the bytes against the module's.
    """
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, channels, rate,
                         rate * channels * 2, channels * 2, 16, b"data", len(pcm))
    return header + pcm


def stereo(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two mono int16 tracks -> one ``(n, 2)`` array, the shorter padded with silence."""
    n = max(len(left), len(right))
    out = np.zeros((n, 2), dtype=np.int16)
    out[: len(left), 0] = left
    out[: len(right), 1] = right
    return out


def read_wav(data: bytes) -> tuple[int, int, np.ndarray]:
    """(channels, rate, int16 samples) of a 16-bit PCM WAV (tests and tools)."""
    with wave.open(io.BytesIO(data), "rb") as w:
        ch, rate, width = w.getnchannels(), w.getframerate(), w.getsampwidth()
        frames = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError("only 16-bit WAV supported")
    s = np.frombuffer(frames, dtype="<i2")
    return ch, rate, s.reshape(-1, ch) if ch > 1 else s


__all__ = [
    "ALAW_TO_LINEAR",
    "G711_CODECS",
    "SAMPLE_RATE",
    "ULAW_TO_LINEAR",
    "decode",
    "decode_alaw",
    "decode_ulaw",
    "encode",
    "is_g711",
    "pcm_bytes",
    "pcm_sha256",
    "read_wav",
    "stereo",
    "wav_bytes",
]
