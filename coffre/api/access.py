"""Who is behind a request, as the AuditEvents of the log record it."""

from __future__ import annotations

from starlette.requests import Request

from coffre.service.audit import Access

UNAUTHENTICATED = "unauthenticated client"


def access_of(request: Request) -> Access:
    """The acting party of ``request``: the API takes no token yet, so every client is
    known only by its network address."""
    address = request.client.host if request.client else None
    return Access(UNAUTHENTICATED, address=address)
