"""``GET /metrics``: the server's figures (``coffre/api/metrics.py``) in the Prometheus text
format, for whom the settings let read them. Like the health checks, it hands out no
record and logs no access.

Who may scrape: the bearer of the token in ``COFFRE_METRICS_TOKEN_FILE`` when one is set
(Prometheus's ``authorization: credentials_file``), whatever ``COFFRE_AUTH`` says; without
one, anyone who reaches the server when ``COFFRE_METRICS=open`` or ``COFFRE_AUTH=off``
(which opens /fhir itself), and nobody when the server requires tokens: a server that
requires them is not to tell its load to the world by default.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coffre import config
from coffre.api.auth.middleware import challenge, unauthorised
from coffre.api.responses import outcome_response
from coffre.exceptions import CoffreError, FhirError
from coffre.files import secret_text

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The folder prometheus-client's multiprocess mode keeps every process's figures in."""
SHORTEST_TOKEN = 32


@dataclass(frozen=True, slots=True)
class ScrapeAccess:
    """Who may read /metrics: the bearer of ``token`` if there is one, else anyone if
    ``open``, else nobody."""

    token: str = ""
    open: bool = False

    @classmethod
    def from_settings(cls, tokens_required: bool) -> ScrapeAccess:
        path = config.METRICS_TOKEN_FILE.value()
        opened = config.METRICS.value().upper() == "OPEN"
        if path and opened:
            raise CoffreError(
                f"{config.METRICS.env}=open lets anyone read the metrics, and"
                f" {config.METRICS_TOKEN_FILE.env} only its token's bearer: set one of them"
            )
        if path:
            return cls(token=_token_in(Path(path)))
        return cls(open=opened or not tokens_required)

    def refusal(self, request: Request) -> Response | None:
        """The answer to a scraper not let in, or None."""
        if self.token:
            scheme, _, sent = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                sent.strip().encode(), self.token.encode()
            ):
                return None
            said = None if not sent else "this is not the token the metrics are read with"
            return outcome_response(unauthorised(said), {"WWW-Authenticate": challenge(said)})
        if self.open:
            return None
        return outcome_response(
            FhirError(
                403,
                "forbidden",
                "this server requires tokens and serves its metrics to nobody: its operator"
                f" gives the scraper a token ({config.METRICS_TOKEN_FILE.env}) or opens them"
                f" ({config.METRICS.env}=open)",
            )
        )


def _token_in(path: Path) -> str:
    """The token a file holds; each refusal says what is wrong with it, never a byte of it."""
    token = secret_text(path, f"the metrics token file {path}")
    if len(token) < SHORTEST_TOKEN or not token.isprintable() or " " in token:
        raise CoffreError(
            f"the metrics token file {path} holds no token of {SHORTEST_TOKEN} characters at"
            " least, without spaces (make one with: openssl rand -hex 32)"
        )
    return token


def _registry() -> CollectorRegistry:
    """What a scrape reads: every server process's figures when there are several (the
    library chose its mode on import, from the same variable), else this process's, with
    the library's own figures of it (CPU, memory, file descriptors)."""
    if MULTIPROCESS_ENV not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


_SCRAPED = _registry()


async def metrics(request: Request) -> Response:
    access: ScrapeAccess = request.app.state.scrape_access
    refused = access.refusal(request)
    if refused is not None:
        return refused
    return Response(generate_latest(_SCRAPED), media_type=CONTENT_TYPE_LATEST)


def scrape_routes() -> list[Route]:
    return [Route("/metrics", metrics, methods=["GET"])]
