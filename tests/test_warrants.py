"""Warrants: validation and normal forms, YAML, the life cycle and its rules (second person,
terminal states, expiry), the collector's TargetSet, the CLI, and fuzzing of every parser."""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from lawtap.cli import _Group
from lawtap.commands import audit as audit_cmd
from lawtap.commands import warrant as warrant_cmd
from lawtap.errors import LawtapError
from lawtap.intercept.audit import AuditLog
from lawtap.intercept.db import Base, dispose_engines
from lawtap.intercept.warrants import (
    TARGET_KINDS,
    Target,
    TargetSet,
    WarrantSpec,
    WarrantStore,
    dump_warrant_yaml,
    load_warrant_yaml,
    normalize_endpoint,
    normalize_target,
    spec_with,
)

T0 = datetime(2024, 5, 1, 0, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAWTAP_HOME", str(tmp_path))
    for var in ("LAWTAP_DB_URL", "LAWTAP_AUDIT_KEY_FILE", "LAWTAP_AUDIT_ANCHOR_FILE"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    dispose_engines()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 - 2 * H)


@pytest.fixture
def store(home: Path, clock: Clock) -> WarrantStore:
    return WarrantStore(f"sqlite:///{home / 'lawtap.db'}", clock=clock)


def make_spec(liid: str = "LI-1", start: datetime = T0, end: datetime = T0 + 24 * H,
              targets=(("ipv4", "10.0.0.7"),), scope: str = "iri+cc") -> WarrantSpec:
    return WarrantSpec(liid, "AG Musterstadt", "§ 100a StPO; 23 Gs 1/24", "LKA", "lemf.example.org:6001",
                       "lemf.example.org:6002", scope, start, end, tuple(targets))


def actions(store: WarrantStore) -> list[tuple[str, str, str | None]]:
    return [(e.actor, e.action, e.object) for e in store.audit.entries()]


# --------------------------------------------------------------------------- normal forms


@pytest.mark.parametrize("kind,value,normal", [
    ("ipv4", " 10.0.0.7 ", "10.0.0.7"),
    ("ipv6", "2001:DB8:0::1", "2001:db8::1"),
    ("prefix", "10.1.0.0/16", "10.1.0.0/16"),
    ("prefix", "2001:db8:42::/48", "2001:db8:42::/48"),
    ("prefix", "192.0.2.1", "192.0.2.1/32"),
    ("username", "Alice@Realm.example", "alice@realm.example"),
    ("email", "mailto:Alice.B@Example.ORG", "alice.b@example.org"),
    ("email", "bob@bücher.example", "bob@xn--bcher-kva.example"),
    ("sip_uri", '"Alice" <sips:alice:secret@Example.org:5061;transport=tcp?subject=x>', "sip:alice@example.org"),
    ("sip_uri", "sip:%2B4930123@[2001:DB8::1]", "sip:+4930123@[2001:db8::1]"),
    ("sip_uri", "SIP:Bob@10.0.0.1", "sip:Bob@10.0.0.1"),
    ("e164", "+49 (30) 123-4567", "49301234567"),
    ("e164", "tel:+4930123456;phone-context=x", "4930123456"),
    ("msisdn", "4917012345678", "4917012345678"),
    ("imsi", "262011234567890", "262011234567890"),
    ("imsi", "26201123456789", "26201123456789"),
    ("imei", "35-209900-176148-1", "352099001761481"),
    ("imei", "3520990017614823", "3520990017614823"),
    ("imei", 35209900176148, "35209900176148"),
])
def test_targets_are_normalised(kind: str, value, normal: str) -> None:
    assert normalize_target(kind, value) == normal
    assert normalize_target(kind, normal) == normal  # idempotent


@pytest.mark.parametrize("kind,value,message", [
    ("ipv4", "10.0.0.0/24", "use kind 'prefix'"),
    ("ipv4", "2001:db8::1", "use kind 'ipv6'"),
    ("ipv4", "10.0.0.256", "does not appear to be"),
    ("ipv6", "fe80::1%eth0", "scope ids"),
    ("prefix", "10.0.0.1/24", "did you mean 10.0.0.0/24"),
    ("email", "alice", "local@domain"),
    ("email", "alice@localhost", "needs a dot"),
    ("email", "al ice@example.org", "invalid local part"),
    ("sip_uri", "alice@example.org", "sip: or sips:"),
    ("sip_uri", "sip:example.org", "user part"),
    ("sip_uri", "sip:a@example.org:99999", "invalid port"),
    ("e164", "+49 30 12a", "digits only"),
    ("e164", "1234", "5-15 digits"),
    ("imsi", "2620112345", "14-15 digits, got 10"),
    ("imsi", "2620112345678901", "14-15 digits, got 16"),
    ("msisdn", "4917012345678901234", "5-15 digits"),
    ("imei", "1234567890123", "14-16 digits, got 13"),
    ("username", "a b", "without spaces"),
    ("telephone", "123", "must be one of"),
    ("email", None, "expected text"),
])
def test_invalid_targets_have_clear_errors(kind: str, value, message: str) -> None:
    with pytest.raises(LawtapError, match=message.replace("(", r"\(")) as exc:
        normalize_target(kind, value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("value,normal", [
    ("lemf.example.org:6001", "lemf.example.org:6001"),
    ("LEMF.Example.org:06001", "lemf.example.org:6001"),
    ("[2001:DB8::1]:443", "[2001:db8::1]:443"),
    ("127.0.0.1:1", "127.0.0.1:1"),
])
def test_endpoints(value: str, normal: str) -> None:
    assert normalize_endpoint(value) == normal


@pytest.mark.parametrize("value", ["lemf", "lemf:0", "lemf:65536", "2001:db8::1:443", ":80", "bad_host:80", "[::1:80"])
def test_bad_endpoints(value: str) -> None:
    with pytest.raises(LawtapError):
        normalize_endpoint(value)


def test_spec_validation() -> None:
    with pytest.raises(LawtapError, match="at least one target"):
        make_spec(targets=())
    with pytest.raises(LawtapError, match="valid_until must be after valid_from"):
        make_spec(end=T0)
    with pytest.raises(LawtapError, match="needs a time zone"):
        make_spec(start=datetime(2024, 5, 1))
    with pytest.raises(LawtapError, match="1-25 visible ASCII"):
        make_spec(liid="LI 1")
    with pytest.raises(LawtapError, match="1-25 visible ASCII"):
        make_spec(liid="X" * 26)
    with pytest.raises(LawtapError, match=r"targets\[1\]: target imsi"):
        make_spec(targets=(("ipv4", "10.0.0.1"), ("imsi", "1")))
    with pytest.raises(LawtapError, match="scope 'cc'"):
        make_spec(scope="cc")
    with pytest.raises(LawtapError, match="needs agency.hi3"):
        WarrantSpec("LI-1", "A", "L", "Ag", "h:1", None, "iri+cc", T0, T0 + H, (("ipv4", "10.0.0.1"),))
    iri = WarrantSpec("LI-1", "A", "L", "Ag", "h:1", None, "iri", T0, T0 + H, (("ipv4", "10.0.0.1"),))
    assert iri.hi3 is None and not iri.includes_cc
    dup = make_spec(targets=(("email", "A@x.org"), ("email", "a@X.org"), ("ipv4", "10.0.0.1")))
    assert dup.targets == (Target("email", "a@x.org"), Target("ipv4", "10.0.0.1"))
    assert spec_with(dup, scope="iri").scope == "iri"


# --------------------------------------------------------------------------- YAML

EXAMPLE = """\
liid: LI-2024-0001
authority: Amtsgericht Musterstadt
legal_reference: "§ 100a StPO; 23 Gs 123/24"
agency:
  name: LKA Musterland
  hi2: lemf.example.org:6001
  hi3: lemf.example.org:6002
scope: iri+cc
valid_from: 2024-05-01T00:00:00Z
valid_until: 2024-08-01T02:00:00+02:00
targets:
  - {kind: ipv4, value: 10.0.0.7}
  - {kind: prefix, value: 2001:db8:42::/48}
  - {kind: email, value: Alice@Example.ORG}
  - {kind: sip_uri, value: "<sip:alice@Example.org;transport=tcp>"}
  - {kind: e164, value: "+49 30 1234567"}
  - {kind: imsi, value: 026201123456789}
  - {kind: imei, value: 35-209900-176148-1}
  - {kind: username, value: yes}
"""


def test_yaml_example_and_round_trip() -> None:
    spec = load_warrant_yaml(EXAMPLE)
    assert spec.liid == "LI-2024-0001" and spec.scope == "iri+cc"
    assert spec.valid_until == datetime(2024, 8, 1, 0, 0, tzinfo=timezone.utc)
    values = {t.kind: t.value for t in spec.targets}
    assert values["imsi"] == "026201123456789"  # not read as an octal/decimal int
    assert values["username"] == "yes"  # not read as a boolean
    assert values["sip_uri"] == "sip:alice@example.org"
    assert values["e164"] == "49301234567"
    text = dump_warrant_yaml(spec)
    assert load_warrant_yaml(text) == spec
    assert load_warrant_yaml(text.encode()) == spec


def test_yaml_short_target_form() -> None:
    doc = EXAMPLE.split("targets:")[0] + "targets:\n  ipv4: [10.0.0.7, 10.0.0.8]\n  email: a@example.org\n"
    spec = load_warrant_yaml(doc)
    assert [t.value for t in spec.targets] == ["10.0.0.7", "10.0.0.8", "a@example.org"]


@pytest.mark.parametrize("change,message", [
    (("scope: iri+cc", "scope: iri+cc\nscop: iri"), "unknown field 'scop'"),
    (("scope: iri+cc", "scope: iri+cc\nscope: iri"), "duplicate key 'scope'"),
    (("valid_from: 2024-05-01T00:00:00Z", "valid_from: 2024-05-01T00:00:00"), "needs a time zone"),
    (("valid_from: 2024-05-01T00:00:00Z", "valid_from: 2024-05-01"), "give a time and zone"),
    (("valid_from: 2024-05-01T00:00:00Z", "valid_from: soon"), "not an ISO-8601 time"),
    (("  hi3: lemf.example.org:6002\n", ""), "needs agency.hi3"),
    (("  name: LKA Musterland\n", ""), "agency: missing field 'name'"),
    (("liid: LI-2024-0001\n", ""), "missing field 'liid'"),
    (("{kind: imsi, value: 026201123456789}", "{kind: imsi, value: 12}"), r"targets\[5\]: target imsi '12'"),
    (("{kind: ipv4, value: 10.0.0.7}", "{kind: ipv4, value: 10.0.0.7, note: x}"), r"targets\[0\]: unknown key 'note'"),
    (("targets:", "targets: [[\ntargets_:"), "not valid YAML"),
])
def test_yaml_errors_are_one_clear_line(change: tuple[str, str], message: str) -> None:
    with pytest.raises(LawtapError, match=message) as exc:
        load_warrant_yaml(EXAMPLE.replace(*change), name="w.yaml")
    assert str(exc.value).startswith("w.yaml: ") and "\n" not in str(exc.value)


def test_yaml_file_errors(tmp_path: Path) -> None:
    with pytest.raises(LawtapError, match="No such file"):
        load_warrant_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LawtapError, match="not UTF-8"):
        load_warrant_yaml(tmp_path / "bin.yaml")
    with pytest.raises(LawtapError, match="a mapping of fields"):
        load_warrant_yaml("- a\n- b\n")


# --------------------------------------------------------------------------- life cycle


def test_lifecycle_and_effective_window(store: WarrantStore, clock: Clock) -> None:
    w = store.create(make_spec(), "alice")
    assert w.state == "draft" and w.created_by == "alice" and not w.is_effective(T0 + H)
    assert store.effective_warrants(T0 + H) == []  # a draft intercepts nothing
    w = store.approve("LI-1", "bob")
    assert (w.state, w.approved_by, w.status(clock())) == ("approved", "bob", "approved")
    assert store.effective_warrants(T0 - timedelta(seconds=1)) == []
    assert [x.liid for x in store.effective_warrants(T0)] == ["LI-1"]  # valid_from inclusive
    assert store.effective_warrants(T0 + 24 * H) == []  # valid_until exclusive
    clock.now = T0 + H
    assert [x.liid for x in store.effective_warrants()] == ["LI-1"]
    assert [x.liid for x in store.list("active")] == ["LI-1"]
    assert store.get("LI-1").status(clock()) == "active"
    assert actions(store) == [("alice", "create", "LI-1"), ("bob", "approve", "LI-1")]
    created = store.audit.entries(action="create")[0].details
    assert created["targets"] == [{"kind": "ipv4", "value": "10.0.0.7"}] and created["authority"] == "AG Musterstadt"


def test_creator_cannot_approve_and_the_refusal_is_audited(store: WarrantStore) -> None:
    store.create(make_spec(), "alice")
    with pytest.raises(LawtapError, match="created by alice; approval must come from a second person"):
        store.approve("LI-1", " ALICE ")
    assert store.get("LI-1").state == "draft"
    assert store.effective_warrants(T0 + H) == []
    denied = store.audit.entries(action="denied")
    assert [(e.actor, e.object, e.details["attempted"]) for e in denied] == [("ALICE", "LI-1", "approve")]
    store.approve("LI-1", "bob")
    with pytest.raises(LawtapError, match="is approved; only a draft can be approved"):
        store.approve("LI-1", "carol")


def test_revoke_is_terminal_and_stops_interception(store: WarrantStore, clock: Clock) -> None:
    store.create(make_spec(), "alice")
    store.approve("LI-1", "bob")
    clock.now = T0 + H
    assert store.effective_warrants()
    with pytest.raises(LawtapError, match="reason: must not be empty"):
        store.revoke("LI-1", "carol", "  ")
    w = store.revoke("LI-1", "alice", "suspect cleared")
    assert (w.state, w.revoked_by, w.revoke_reason) == ("revoked", "alice", "suspect cleared")
    assert store.effective_warrants() == [] and store.effective_warrants(T0 + 2 * H) == []
    assert not store.target_set()
    with pytest.raises(LawtapError, match="already revoked"):
        store.revoke("LI-1", "bob", "again")
    with pytest.raises(LawtapError, match="is revoked"):
        store.approve("LI-1", "bob")
    with pytest.raises(LawtapError, match="cannot be modified"):
        store.modify(make_spec(), "bob")
    revoked = store.audit.entries(action="revoke")[0].details
    assert revoked == {"reason": "suspect cleared", "previous_state": "approved"}


def test_draft_can_be_revoked(store: WarrantStore) -> None:
    store.create(make_spec(), "alice")
    assert store.revoke("LI-1", "alice", "entered by mistake").state == "revoked"


def test_expiry_is_observed_marked_and_audited(store: WarrantStore, clock: Clock) -> None:
    store.create(make_spec(), "alice")
    store.approve("LI-1", "bob")
    store.create(make_spec("LI-2"), "alice")  # a draft also expires
    clock.now = T0 + 24 * H
    assert store.effective_warrants() == []
    # even asked about an instant inside the old window: expired warrants never intercept
    assert store.effective_warrants(T0 + H) == []
    assert {w.liid: w.state for w in store.list()} == {"LI-1": "expired", "LI-2": "expired"}
    expires = store.audit.entries(action="expire")
    assert [(e.actor, e.object, e.details["previous_state"]) for e in expires] == [
        ("system", "LI-1", "approved"), ("system", "LI-2", "draft")]
    store.list()  # observed again: no second entry
    assert len(store.audit.entries(action="expire")) == 2
    with pytest.raises(LawtapError, match="is expired"):
        store.approve("LI-2", "bob")
    with pytest.raises(LawtapError, match="already expired"):
        store.revoke("LI-1", "bob", "late")
    assert store.audit.verify() == []


def test_modify_returns_to_draft_and_needs_another_person(store: WarrantStore, clock: Clock) -> None:
    store.create(make_spec(), "alice")
    store.approve("LI-1", "bob")
    wider = make_spec(targets=(("ipv4", "10.0.0.7"), ("email", "x@example.org")))
    w = store.modify(wider, "bob")
    assert w.state == "draft" and w.approved_by is None and len(w.targets) == 2
    assert store.effective_warrants(T0 + H) == []
    with pytest.raises(LawtapError, match="last modified by bob"):
        store.approve("LI-1", "bob")
    with pytest.raises(LawtapError, match="created by alice"):
        store.approve("LI-1", "alice")
    store.approve("LI-1", "carol")
    mod = store.audit.entries(action="modify")[0].details
    assert mod["changed"] == ["targets"] and mod["reapproval_required"] is True
    assert store.target_set(T0 + H).match("email", "X@example.org", T0 + H)


def test_create_rules(store: WarrantStore, clock: Clock) -> None:
    store.create(make_spec(), "alice")
    with pytest.raises(LawtapError, match="already exists"):
        store.create(make_spec(), "carol")
    with pytest.raises(LawtapError, match="window ended"):
        store.create(make_spec("LI-old", T0 - 48 * H, T0 - 24 * H), "alice")
    with pytest.raises(LawtapError, match="no warrant with LIID 'LI-9'"):
        store.approve("LI-9", "bob")
    with pytest.raises(LawtapError, match="state 'x'"):
        store.list("x")
    with pytest.raises(LawtapError, match="user: must not be empty"):
        store.create(make_spec("LI-2"), "")


def test_view_is_audited(store: WarrantStore) -> None:
    store.create(make_spec(), "alice")
    store.view("LI-1", "dora")
    store.get("LI-1")  # machines read without an entry
    assert actions(store)[-1] == ("dora", "view", "LI-1")
    assert len(actions(store)) == 2


def test_schema_is_portable_to_postgresql() -> None:
    dialect = postgresql.dialect()
    for table in Base.metadata.sorted_tables:
        assert "CREATE TABLE" in str(CreateTable(table).compile(dialect=dialect))
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=dialect))


def test_store_and_audit_share_env_url(home: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    monkeypatch.setenv("LAWTAP_DB_URL", f"sqlite:///{home / 'other.db'}")
    WarrantStore(clock=clock).create(make_spec(), "alice")
    assert (home / "other.db").exists() and not (home / "lawtap.db").exists()
    assert [e.action for e in AuditLog().entries()] == ["create"]


# --------------------------------------------------------------------------- TargetSet


def test_target_set_matching(store: WarrantStore, clock: Clock) -> None:
    store.create(make_spec("LI-A", targets=(("prefix", "10.0.0.0/24"), ("imei", "352099001761481"),
                                            ("e164", "+49301234567"), ("sip_uri", "sip:alice@example.org"))), "alice")
    store.create(make_spec("LI-B", T0 + 2 * H, T0 + 3 * H, targets=(("ipv4", "10.0.0.7"), ("msisdn", "49301234567"),
                                                                    ("prefix", "2001:db8::/32")), scope="iri"), "alice")
    store.create(make_spec("LI-C", targets=(("ipv4", "10.0.1.9"),)), "alice")  # never approved
    store.approve("LI-A", "bob")
    store.approve("LI-B", "bob")
    ts = store.target_set(T0 + H, horizon=4 * H)
    assert ts.liids == {"LI-A", "LI-B"} and len(ts) == 2
    inside_b = T0 + 2.5 * H
    liids = lambda taps: sorted(t.liid for t in taps)  # noqa: E731
    assert liids(ts.match_ip("10.0.0.7", T0 + H)) == ["LI-A"]  # LI-B's window has not begun
    assert liids(ts.match_ip("10.0.0.7", inside_b)) == ["LI-A", "LI-B"]
    assert liids(ts.match_ip(ipaddress.ip_address("10.0.0.7").packed, inside_b.timestamp())) == ["LI-A", "LI-B"]
    assert liids(ts.match_ipv4(int(ipaddress.ip_address("10.0.0.200")), inside_b)) == ["LI-A"]
    assert ts.match_ip("10.0.1.1", inside_b) == () and ts.match_ip("10.0.1.9", inside_b) == ()
    assert liids(ts.match_ip("2001:db8:1::5", inside_b)) == ["LI-B"]
    assert ts.match_ip("2001:db9::5", inside_b) == ()
    assert ts.match_ip("10.0.0.7", T0 + 24 * H) == ()  # windows are checked per packet
    tap = ts.match_ip("2001:db8::1", inside_b)[0]
    assert (tap.scope, tap.cc, tap.valid_from, tap.valid_until) == ("iri", False, T0 + 2 * H, T0 + 3 * H)
    assert liids(ts.match("imei", "35209900176148", inside_b)) == ["LI-A"]  # 14-digit IMEI
    assert liids(ts.match("imei", "3520990017614899", inside_b)) == ["LI-A"]  # IMEISV of the same device
    assert liids(ts.match_phone("tel:+49-30-1234567", inside_b)) == ["LI-A", "LI-B"]
    assert liids(ts.match("sip_uri", "<sip:alice@EXAMPLE.org;transport=udp>", inside_b)) == ["LI-A"]
    assert ts.match("email", "alice@example.org", inside_b) == ()
    assert ts.match("imsi", "garbage", inside_b) == () and ts.match_ip("not an ip", inside_b) == ()
    assert {str(n) for n in ts.networks} == {"10.0.0.0/24", "10.0.0.7/32", "2001:db8::/32"}
    assert ts.refresh_by == (T0 + 3 * H).timestamp()
    with pytest.raises(AttributeError):
        ts.at = T0  # type: ignore[misc]
    # without a horizon only what is effective at that instant
    assert store.target_set(T0 + H).liids == {"LI-A"}


def test_empty_target_set(store: WarrantStore) -> None:
    ts = store.target_set()
    assert not ts and ts.match_ip("10.0.0.1", T0) == () and ts.refresh_by is None


# --------------------------------------------------------------------------- CLI


def cli() -> _Group:
    root = _Group("lawtap")
    root.add_command(warrant_cmd.group)
    root.add_command(audit_cmd.group)
    return root


def test_cli_workflow(home: Path, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    spec = make_spec("LI-CLI", now - H, now + 48 * H, targets=(("ipv4", "10.0.0.7"), ("imsi", "262011234567890")))
    f = tmp_path / "w.yaml"
    f.write_text(dump_warrant_yaml(spec))
    runner = CliRunner()
    run = lambda *a: runner.invoke(cli(), list(a))  # noqa: E731
    res = run("warrant", "create", str(f), "--user", "alice")
    assert res.exit_code == 0, res.output
    assert "created warrant LI-CLI (draft, 2 target(s))" in res.output
    res = run("warrant", "approve", "LI-CLI", "--user", "alice")
    assert res.exit_code == 2
    assert res.output.strip() == ("lawtap: warrant LI-CLI was created by alice; approval must come from a "
                                  "second person")
    res = run("warrant", "approve", "LI-CLI", "--user", "bob")
    assert res.exit_code == 0 and "approved warrant LI-CLI: active" in res.output
    res = run("warrant", "list")
    assert res.exit_code == 0 and "LI-CLI" in res.output and "active" in res.output
    res = run("warrant", "list", "--state", "draft")
    assert "LI-CLI" not in res.output
    res = run("warrant", "list", "--json")
    assert json.loads(res.output)["status"] == "active"
    res = run("warrant", "show", "LI-CLI", "--yaml", "--user", "dora")
    assert res.exit_code == 0 and load_warrant_yaml(res.output) == spec
    res = run("warrant", "show", "LI-CLI")
    assert "approved:" in res.output and "imsi      262011234567890" in res.output
    res = run("warrant", "revoke", "LI-CLI", "--user", "carol", "--reason", "done")
    assert res.exit_code == 0
    res = run("warrant", "show", "LI-CLI", "--json")
    assert json.loads(res.output)["status"] == "revoked"
    res = run("warrant", "create", str(tmp_path / "nope.yaml"), "--user", "alice")
    assert res.exit_code == 2 and res.output.startswith("lawtap: ") and "No such file" in res.output
    res = run("audit", "log", "-n", "50")
    logged = [line.split()[3] for line in res.output.splitlines()]
    assert logged == ["create", "denied", "approve", "view", "view", "revoke", "view"]
    res = run("audit", "verify")
    assert res.exit_code == 0, res.output


def test_cli_db_option(tmp_path: Path, home: Path) -> None:
    url = f"sqlite:///{tmp_path / 'explicit.db'}"
    res = CliRunner().invoke(cli(), ["warrant", "--db", url, "list"])
    assert res.exit_code == 0 and (tmp_path / "explicit.db").exists()
    res = CliRunner().invoke(cli(), ["warrant", "--db", "nonsense://", "list"])
    assert res.exit_code == 2 and res.output.startswith("lawtap: ")


# --------------------------------------------------------------------------- fuzzing


_kinds = st.sampled_from(TARGET_KINDS)
_values = st.one_of(st.text(max_size=40), st.integers(min_value=-10, max_value=10**17),
                    st.from_regex(r"\+?[0-9 \-]{0,20}", fullmatch=True),
                    st.from_regex(r"<?sips?:[a-z%0-9:]{0,8}@[A-Za-z0-9.\[\]:]{0,20}(;[a-z=]{0,6})?>?", fullmatch=True),
                    st.ip_addresses().map(str), st.none())


@settings(max_examples=400, deadline=None)
@given(kind=_kinds, value=_values)
def test_fuzz_normalize_target_never_crashes_and_is_idempotent(kind: str, value) -> None:
    try:
        normal = normalize_target(kind, value)
    except LawtapError as e:
        assert "\n" not in str(e)
        return
    assert normalize_target(kind, normal) == normal


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.text(max_size=40), st.from_regex(r"\[?[0-9a-fA-F:.]{0,20}\]?:[0-9]{0,6}", fullmatch=True)))
def test_fuzz_endpoint(value: str) -> None:
    try:
        normal = normalize_endpoint(value)
    except LawtapError:
        return
    assert normalize_endpoint(normal) == normal


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_fuzz_yaml_random_input(data) -> None:
    try:
        load_warrant_yaml(data)
    except LawtapError as e:
        assert "\n" not in str(e)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(EXAMPLE)), flip=st.integers(min_value=0, max_value=len(EXAMPLE) - 1),
       char=st.characters())
def test_fuzz_yaml_truncated_and_mutated(cut: int, flip: int, char: str) -> None:
    for doc in (EXAMPLE[:cut], EXAMPLE[:flip] + char + EXAMPLE[flip + 1:]):
        try:
            spec = load_warrant_yaml(doc)
        except LawtapError as e:
            assert "\n" not in str(e)
        else:
            assert load_warrant_yaml(dump_warrant_yaml(spec)) == spec


@settings(max_examples=200, deadline=None)
@given(kind=st.text(max_size=10) | _kinds, value=_values | st.binary(max_size=20),
       t=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_fuzz_target_set_match(kind: str, value, t: float) -> None:
    spec = make_spec(targets=(("prefix", "10.0.0.0/8"), ("email", "a@b.org"), ("imei", "35209900176148")))
    from lawtap.intercept.warrants import Warrant
    ts = TargetSet([Warrant(spec, "approved", "alice", T0)], T0)
    assert isinstance(ts.match(kind, value, t), tuple)
    assert isinstance(ts.match_ip(value, t), tuple)
    assert isinstance(ts.match_phone(value, t), tuple)
