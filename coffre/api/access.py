"""Who is behind a request, as the AuditEvents of the log record it, and the hook point
where a clinician's access to a patient's record is announced."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.applications import Starlette
from starlette.requests import Request

from coffre.api.auth.enforce import Reached, guard_of, principal_of
from coffre.api.auth.scopes import Principal
from coffre.api.state import committer_of
from coffre.ledger.leaf import LeafKind
from coffre.service.audit import BREAK_GLASS, Access
from coffre.service.stored import Stored
from coffre.service.writer import Writer

UNAUTHENTICATED = "unauthenticated client"
T = TypeVar("T")
AccessHook = Callable[[Request, list[Reached]], Awaitable[None]]


def access_of(request: Request) -> Access:
    """The acting party of ``request``: the principal of its bearer token (the person or
    system, their role, the app, the purpose the token states, or break-glass and its
    reason), else an unauthenticated client known only by its network address."""
    address = request.client.host if request.client else None
    principal = principal_of(request)
    if principal is None:
        return Access(UNAUTHENTICATED, address=address)
    reason = guard_of(request).break_glass
    purpose = BREAK_GLASS if reason else principal.purpose
    return principal_access(principal, address, purpose, reason)


def principal_access(
    principal: Principal,
    address: str | None,
    purpose: str | None = None,
    reason: str | None = None,
) -> Access:
    """The acting party the audit log names for ``principal``: the person, their role,
    the app, from ``address``; ``purpose`` and ``reason`` as the request states them; the
    patient it acts as, if it does."""
    return Access(
        principal.actor,
        address=address,
        purpose=purpose,
        reason=reason,
        fhir_user=principal.fhir_user,
        role=str(principal.role) if principal.role else None,
        client_id=principal.client_id or None,
        patient=principal.acting_patient(),
    )


def act_for(request: Request, access: Access) -> None:
    """Say who ``request`` acts for where no bearer token does: a portal page acts for the
    signed-in patient, whom a refusal it meets is then logged under too."""
    request.state.acting_for = access


def acting_for(request: Request) -> Access | None:
    """Who ``act_for`` said ``request`` acts for, if anyone."""
    access: Access | None = getattr(request.state, "acting_for", None)
    return access


def add_access_hook(app: Starlette, hook: AccessHook) -> None:
    """Call ``hook`` after each request in which a clinician opened patients' records,
    once the access is durable in the log: the first-access notice hangs here. It gets
    the request and each patient reached (with the practitioner, and the break-glass
    reason if any)."""
    hooks: list[AccessHook] = getattr(app.state, "access_hooks", [])
    app.state.access_hooks = [*hooks, hook]


async def announce(request: Request) -> None:
    """Run the access hooks for the patients a clinician reached in ``request``."""
    hooks: list[AccessHook] = getattr(request.app.state, "access_hooks", [])
    reached = list(guard_of(request).reached.values())
    if reached:
        for hook in hooks:
            await hook(request, reached)


async def commit(request: Request, job: Callable[[Writer], T]) -> T:
    """Run a write in the next group commit; it is durable when this returns."""
    committer = committer_of(request)
    return await committer.run(job, access_of(request))


async def log_access(request: Request, kind: LeafKind, handed_out: list[Stored]) -> None:
    """Record what is about to leave; the caller answers only once this is durable."""
    if handed_out:
        await commit(request, lambda writer: writer.log_access(kind, handed_out))
        guard_of(request).note(handed_out)
        await announce(request)
