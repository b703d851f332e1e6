"""X1 provisioning reaches the warrant store as drafts that still need a second person."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

import test_x1 as x1t
from lawtap.intercept.warrants import WarrantStore
from lawtap.intercept.x1backend import WarrantX1Backend
from lawtap.x1 import X1Service


@pytest.fixture
def setup(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LAWTAP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(x1t, "TS", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
    store = WarrantStore(f"sqlite:///{tmp_path / 'w.db'}")
    backend = WarrantX1Backend(store, agency="Test LEA", hi2="127.0.0.1:6001", hi3="127.0.0.1:6002")
    service = X1Service(backend, x1t.NE, on_request=backend.audit_hook)
    return store, service


def test_activate_is_a_draft_until_approved_then_deactivate_revokes(setup) -> None:
    store, service = setup
    reply = service.handle(x1t.activate(), x1t.ADMF)
    assert b"Error" not in reply.body, reply.body
    w = store.get("LIID-0001")
    assert w.state == "draft" and [(t.kind, t.value) for t in w.spec.targets] == [("sip_uri", "sip:alice@example.com")]
    now = datetime.now(timezone.utc)
    assert store.effective_warrants(now) == []  # X1 alone intercepts nothing
    store.approve("LIID-0001", "bob")
    assert [x.liid for x in store.effective_warrants(now)] == ["LIID-0001"]
    details = service.handle(x1t.simple("GetTaskDetails"), x1t.ADMF)
    assert b"complete" in details.body
    service.handle(x1t.simple("DeactivateTask"), x1t.ADMF)
    assert store.get("LIID-0001").state == "revoked"
    actions = [e.action for e in store.audit.entries()]
    assert actions.count("x1_request") == 3 and "create" in actions and "revoke" in actions


def test_invalid_x1_request_changes_nothing(setup) -> None:
    store, service = setup
    bad = x1t.document(x1t.message("ActivateTaskRequest", x1t.details(delivery="Bogus")))
    reply = service.handle(bad, x1t.ADMF)
    assert b"Error" in reply.body
    assert store.list() == []
    assert any(e.action == "x1_request" and not e.details["ok"] for e in store.audit.entries())
