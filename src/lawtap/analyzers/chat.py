"""The shared ``chat`` record: one row per instant message, whatever protocol carried it.

IRC (PRIVMSG/NOTICE, DCC CHAT lines), XMPP (``<message>`` bodies) and SIP MESSAGE all produce
``("chat", {...})`` records with exactly these fields:

* ``protocol``: ``irc``, ``irc-dcc``, ``xmpp``, ``sip``...
* ``from`` / ``to``: who sent it and to whom (IRC nick / target, XMPP JID, SIP URI);
* ``channel``: the group the message went to (IRC ``#chan``/``&chan``, XMPP groupchat room), else null;
* ``text``: the message text;
* ``is_orig``: True when the connection's originator sent the bytes carrying it.

This module is not an analyzer (no ``ANALYZERS``); the analyzers producing chat records list
``"chat": CHAT_SCHEMA`` in their own ``RECORD_SCHEMAS``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS

__all__ = ["TS", "COMMON_FIELDS", "CHAT_SCHEMA", "RECORD_SCHEMAS", "chat_record", "schema_with"]

TS = pa.timestamp("us", tz="UTC")

# Filled by the pipeline for every record type.


def schema_with(fields: list[pa.Field]) -> pa.Schema:
    """The common fields followed by a record type's own fields."""
    return pa.schema(COMMON_FIELDS + list(fields))


CHAT_SCHEMA = schema_with(
    [
        pa.field("protocol", pa.string()),
        pa.field("from", pa.string()),
        pa.field("to", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("text", pa.string()),
        pa.field("is_orig", pa.bool_()),
    ]
)

RECORD_SCHEMAS = {"chat": CHAT_SCHEMA}


def chat_record(
    protocol: str,
    sender: str | None,
    to: str | None,
    text: str,
    is_orig: bool,
    ts: float | None = None,
    channel: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """A ``("chat", fields)`` event ready to append to an analyzer's ``records``."""
    fields: dict[str, Any] = {
        "protocol": protocol,
        "from": sender,
        "to": to,
        "channel": channel,
        "text": text,
        "is_orig": is_orig,
    }
    if ts is not None:
        fields["ts"] = ts
    return ("chat", fields)
