"""Random, truncated, re-split and bit-flipped input never breaks the mail analyzers.

The analyzers catch everything at their entry points (a bug becomes an ``*_analyzer_error``
weird instead of an exception), so the properties check both that nothing escapes and that
no such internal-error weird was produced; every record must also fit its Arrow schema.
"""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap.analyzers import imap as imap_mod
from lawtap.analyzers import mail
from lawtap.analyzers import pop3 as pop3_mod
from lawtap.analyzers import smtp as smtp_mod
from lawtap.analyzers.base import ConnInfo
from test_email import MIXED, SIMPLE, check_schemas, imap_session, pop_session, smtp_session, Result

CONN = ConnInfo("Cfuzz", "10.0.0.1", 40000, "10.0.0.2", 25, "tcp")
KINDS = [
    (smtp_mod.SMTPAnalyzer, smtp_mod.RECORD_SCHEMAS),
    (pop3_mod.POP3Analyzer, pop3_mod.RECORD_SCHEMAS),
    (imap_mod.IMAPAnalyzer, imap_mod.RECORD_SCHEMAS),
]
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# protocol words that steer the state machines into their deeper states
TOKENS = [
    b"220 ok\r\n", b"250 ok\r\n", b"250-x\r\n", b"354 go\r\n", b"334 \r\n", b"235 ok\r\n", b"554 no\r\n",
    b"EHLO a\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"DATA\r\n", b"BDAT 7\r\n", b"BDAT 3 LAST\r\n",
    b"BDAT 99999999999\r\n", b"RSET\r\n", b"STARTTLS\r\n", b"AUTH LOGIN\r\n", b"AUTH PLAIN =\r\n", b".\r\n", b"..\r\n",
    b"\r\n.\r\n", b"+OK\r\n", b"-ERR\r\n", b"+ \r\n", b"USER u\r\n", b"PASS p\r\n", b"RETR 1\r\n", b"TOP 1 0\r\n",
    b"LIST\r\n", b"AUTH\r\n", b"STLS\r\n", b"CAPA\r\n", b"* OK\r\n", b"a1 LOGIN {3}\r\n", b"a2 OK\r\n",
    b"* 1 FETCH (BODY[] {12}\r\n", b"* 1 FETCH (RFC822 {0}\r\n", b" BODY[TEXT] {4}\r\n", b"BODY[HEADER] {99999}\r\n",
    b"a3 AUTHENTICATE PLAIN\r\n", b"a4 COMPRESS DEFLATE\r\n", b"a5 APPEND x {5+}\r\n", b"a6 STARTTLS\r\n", b")\r\n",
    b"Subject: =?utf-8?b?w4Q=?=\r\n", b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n", b"--B--\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Disposition: attachment; filename=x\r\n\r\n", b"=?x?q?=ZZ?=",
    base64.b64encode(b"\x00user\x00pw") + b"\r\n", b"\x00\xff\r", b"\n", b"{", b"}",
]


def run(cls, steps, schemas) -> Result:
    an = cls(CONN)
    res = Result(an)
    t = 1.0
    for step in steps:
        t += 0.01
        if step[0] == "gap":
            an.gap(step[1], step[2], t)
        else:
            an.feed(step[1], step[2], t)
        res.take()
    an.finish(t + 1)
    res.take()
    assert not [w for w in res.weirds if w[0].endswith("_analyzer_error")], res.weirds
    assert all(isinstance(n, str) and isinstance(d, str) for n, d in res.weirds)
    for f in res.files:
        assert isinstance(f.data, bytes) and f.source in ("SMTP", "POP3", "IMAP")
    check_schemas(res, schemas)
    return res


step = st.one_of(
    st.tuples(st.just("data"), st.booleans(), st.binary(max_size=200)),
    st.tuples(st.just("data"), st.booleans(), st.lists(st.sampled_from(TOKENS), max_size=8).map(b"".join)),
    st.tuples(st.just("gap"), st.booleans(), st.integers(1, 5000)),
)


@FAST
@given(st.sampled_from(KINDS), st.lists(step, max_size=30))
def test_random_steps(kind, steps):
    run(kind[0], steps, kind[1])


def _sessions():
    return [
        (smtp_mod.SMTPAnalyzer, smtp_mod.RECORD_SCHEMAS, smtp_session([SIMPLE, MIXED])),
        (pop3_mod.POP3Analyzer, pop3_mod.RECORD_SCHEMAS, pop_session([MIXED, SIMPLE])),
        (imap_mod.IMAPAnalyzer, imap_mod.RECORD_SCHEMAS, imap_session(MIXED)),
    ]


SESSIONS = _sessions()


@FAST
@given(st.integers(0, len(SESSIONS) - 1), st.data())
def test_mutated_sessions(which, data):
    """Valid sessions, truncated, re-split at random points and with flipped bits/bytes."""
    cls, schemas, script = SESSIONS[which]
    steps = []
    for is_orig, payload in script:
        b = bytearray(payload)
        for _ in range(data.draw(st.integers(0, 3))):
            if b:
                i = data.draw(st.integers(0, len(b) - 1))
                if data.draw(st.booleans()):
                    b[i] ^= 1 << data.draw(st.integers(0, 7))
                else:
                    b[i] = data.draw(st.sampled_from(b"\r\n.{}+ 0-9*"))
        cut = data.draw(st.integers(1, max(1, len(b))))
        steps.append(("data", is_orig, bytes(b[:cut])))
        if cut < len(b):
            steps.append(("data", is_orig, bytes(b[cut:])))
    stop = data.draw(st.integers(0, len(steps)))
    run(cls, steps[:stop], schemas)


@FAST
@given(st.integers(0, len(SESSIONS) - 1), st.data())
def test_sessions_with_gaps(which, data):
    """A gap of random size somewhere in a valid session (the bytes are really missing)."""
    cls, schemas, script = SESSIONS[which]
    k = data.draw(st.integers(0, len(script) - 1))
    steps = [("data", o, p) for o, p in script]
    is_orig, payload = script[k]
    a = data.draw(st.integers(0, len(payload)))
    b = data.draw(st.integers(a, len(payload)))
    steps[k : k + 1] = [("data", is_orig, payload[:a]), ("gap", is_orig, max(1, b - a)), ("data", is_orig, payload[b:])]
    run(cls, steps, schemas)


@FAST
@given(st.binary(max_size=3000))
def test_parse_message_never_raises(raw):
    pm = mail.parse_message(raw)
    mail.header_fields(pm)
    mail.zeek_smtp_fields(pm, "10.0.0.2", "10.0.0.1")
    rec, files, _ = mail.message_events(protocol="smtp", raw=raw, ts=1.0, is_orig=True, index=1)
    assert files[0].data == raw


@FAST
@given(st.lists(st.sampled_from(TOKENS[-14:] + [b"From: x\r\n", b"To: a, \"b, c\" <d@e>\r\n", b"\r\n", b"body\r\n"]), max_size=40).map(b"".join))
def test_parse_mime_like_never_raises(raw):
    pm = mail.parse_message(raw)
    mail.header_fields(pm)
