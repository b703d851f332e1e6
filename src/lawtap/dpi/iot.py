"""IoT / industrial family: mqtt, modbus, dnp3."""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, WEAK, Ctx, detector, either

# --------------------------------------------------------------------------
# MQTT CONNECT (3.1 "MQIsdp", 3.1.1 / 5.0 "MQTT")


def _mqtt_connect(p: bytes) -> int:
    if len(p) < 12 or p[0] != 0x10:
        return 0
    # remaining length: 1-4 byte varint
    i, rl, mul = 1, 0, 1
    while i < 5 and i < len(p):
        b = p[i]
        rl += (b & 0x7F) * mul
        mul <<= 7
        i += 1
        if not b & 0x80:
            break
    else:
        return 0
    if p[i : i + 6] == b"\x00\x04MQTT" and p[i + 6 : i + 7] in (b"\x04", b"\x05", b"\x03"):
        return DEFINITE
    if p[i : i + 8] == b"\x00\x06MQIsdp" and p[i + 8 : i + 9] == b"\x03":
        return DEFINITE
    return 0


@detector("mqtt", ("tcp",), (1883, 8883, 1884), both=b"\x10\x20", prio=30)
def mqtt(ctx: Ctx) -> int:
    s = _mqtt_connect(ctx.o0) or _mqtt_connect(ctx.r0)
    if s:
        return s
    for r in (ctx.r0, ctx.o0):
        if len(r) in (4, 5) and r[0] == 0x20 and r[1] in (2, 3) and r[2] <= 1:
            return WEAK  # CONNACK
    return 0


# --------------------------------------------------------------------------
# Modbus/TCP (MBAP header)


def _modbus(p: bytes, resp: bool) -> int:
    n = len(p)
    if n < 8 or p[2:4] != b"\x00\x00":
        return 0
    ln = (p[4] << 8) | p[5]
    if ln < 2 or ln > 254 or ln + 6 != n:
        return 0
    fc = p[7]
    if 1 <= fc <= 24 or fc in (43, 90, 100):
        return MEDIUM
    if resp and 0x81 <= fc <= 0x98 and n == 9:
        return MEDIUM
    return 0


@detector("modbus", "tcp", (502, 802), o_first=None, r_first=None, prio=50)
def modbus(ctx: Ctx) -> int:
    return either(_modbus_pair, ctx)


def _modbus_pair(o: bytes, r: bytes) -> int:
    so = _modbus(o, False)
    if not so:
        return 0
    if r:
        if _modbus(r, True) and r[:2] == o[:2] and r[6] == o[6] and r[7] & 0x7F == o[7]:
            return DEFINITE  # same transaction id, unit and function code
        return WEAK
    return so


# --------------------------------------------------------------------------
# DNP3 (link layer start 0x0564, header CRC)


def _crc_dnp(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
    return (~crc) & 0xFFFF


def _dnp3(p: bytes) -> int:
    if len(p) < 10 or p[0] != 0x05 or p[1] != 0x64 or p[2] < 5:
        return 0
    crc = p[8] | (p[9] << 8)
    if _crc_dnp(p[:8]) == crc:
        return DEFINITE
    return 0


@detector("dnp3", ("tcp", "udp"), (20000,), both=b"\x05", prio=40)
def dnp3(ctx: Ctx) -> int:
    return max(_dnp3(ctx.o0), _dnp3(ctx.r0))

