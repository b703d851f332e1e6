"""X1 tasks land in the warrant store — as drafts that a person must still approve.

An ADMF provisioning a task over X1 is one person's decision; lawtap's rule is that nothing is
intercepted without a second one. So ``ActivateTask`` creates a *draft* warrant (the X1
response says ``Acknowledged``, not completed), ``ModifyTask`` changes it (back to draft),
``DeactivateTask`` revokes it, and ``GetTaskDetails`` reports ``complete`` once approved.
Every X1 request is written to the audit trail.
"""

from __future__ import annotations

from datetime import timedelta

from lawtap.errors import LawtapError
from lawtap.intercept.warrants import Target, WarrantSpec, WarrantStore
from lawtap.x1.messages import ErrorCode, X1Error, X1Target, X1Task


class WarrantX1Backend:
    """Implements :class:`lawtap.x1.server.X1Backend` on a :class:`WarrantStore`.

    X1 carries no issuing authority, legal reference or handover endpoints: those come from the
    server's configuration for its ADMF (``agency``, ``hi2``, ``hi3``). A task without an end
    time gets ``max_window``.
    """

    def __init__(self, store: WarrantStore, *, agency: str, hi2: str, hi3: str | None = None,
                 max_window: timedelta = timedelta(days=90)) -> None:
        self.store = store
        self.agency, self.hi2, self.hi3 = agency, hi2, hi3
        self.max_window = max_window
        self._xid_liid: dict[str, str] = {}

    def _spec(self, task: X1Task, admf_id: str) -> WarrantSpec:
        if not task.liid:
            raise X1Error(ErrorCode.GENERIC_ERROR, "task has no LIID")
        until = task.valid_until or task.valid_from + self.max_window
        return WarrantSpec(
            liid=task.liid, authority=f"X1 ADMF {admf_id}", legal_reference=f"X1 task {task.xid}",
            agency=self.agency, hi2=self.hi2, hi3=self.hi3 or self.hi2, scope=task.scope,
            valid_from=task.valid_from, valid_until=until,
            targets=tuple(Target.of(t.kind, t.value) for t in task.targets),
        )

    def activate(self, task: X1Task, admf_id: str) -> None:
        if task.xid in self._xid_liid:
            raise X1Error(ErrorCode.XID_ALREADY_EXISTS, f"XID {task.xid} already exists")
        self.store.create(self._spec(task, admf_id), f"x1:{admf_id}")
        self._xid_liid[task.xid] = task.liid or ""

    def modify(self, task: X1Task, admf_id: str) -> None:
        if task.xid not in self._xid_liid:
            raise X1Error(ErrorCode.XID_NOT_FOUND, f"XID {task.xid} not found")
        self.store.modify(self._spec(task, admf_id), f"x1:{admf_id}")

    def deactivate(self, xid: str, admf_id: str) -> None:
        liid = self._xid_liid.get(xid)
        if liid is None:
            raise X1Error(ErrorCode.XID_NOT_FOUND, f"XID {xid} not found")
        self.store.revoke(liid, f"x1:{admf_id}", "X1 DeactivateTask")

    def details(self, xid: str) -> X1Task | None:
        liid = self._xid_liid.get(xid)
        if liid is None:
            return None
        try:
            w = self.store.get(liid)
        except LawtapError:
            return None
        spec = w.spec
        return X1Task(
            xid=xid,
            targets=tuple(X1Target(t.kind, t.value, "", t.value) for t in spec.targets),  # type: ignore[arg-type]
            delivery_type="X2andX3" if spec.scope == "iri+cc" else "X2Only",
            scope=spec.scope,  # type: ignore[arg-type]
            dids=(), liid=liid, valid_from=spec.valid_from, valid_until=spec.valid_until,
            provisioning_status="complete" if w.state == "approved" else "awaitingProvisioning",
        )

    def audit_hook(self, admf_id: str, message_type: str, xid: str | None, ok: bool, error: str | None) -> None:
        """Every X1 request, accepted or refused, goes to the audit trail."""
        self.store.audit.append(f"x1:{admf_id}", "x1_request", self._xid_liid.get(xid or "", None),
                                message_type=message_type, xid=xid, ok=ok, error=error)


