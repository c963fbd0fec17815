"""Who is behind a request, as the AuditEvents of the log record it."""

from __future__ import annotations

from starlette.requests import Request

from coffre.api.auth import Principal
from coffre.service.audit import Access

UNAUTHENTICATED = "unauthenticated client"


def access_of(request: Request) -> Access:
    """The acting party of ``request``: the principal of its bearer token (the person or
    system, their role, the app, the purpose the token states), else an unauthenticated
    client known only by its network address."""
    address = request.client.host if request.client else None
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        return Access(UNAUTHENTICATED, address=address)
    return Access(principal.actor, address=address, purpose=principal.purpose)
