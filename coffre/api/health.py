"""Health checks for load balancers and orchestrators, outside /fhir and open, as probes
are: ``/health/live`` (the process answers) and ``/health/ready`` (it can serve: the
storage answers, its newest checkpoint carries this gateway's signature, the log's
leaves give the map root it signed, it takes writes, which every request makes, and the
key custody answers). They hand out no record, count nothing, and log no
access; a failed check answers as any request would (503 while the storage is away,
500 when what it holds fails a check), and the server's log says why."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coffre.api.state import records_of
from coffre.fhir import json

HEALTH_JSON = "application/health+json"


def _passing() -> Response:
    return Response(json.dumps({"status": "pass"}), media_type=HEALTH_JSON)


async def live(request: Request) -> Response:
    return _passing()


async def ready(request: Request) -> Response:
    records = records_of(request)
    records.latest_writes.catch_up(records.storage)
    records.ledger.check_map(records.storage, records.latest_writes)
    records.storage.check_writable()
    records.custodian.check()
    return _passing()


def health_routes() -> list[Route]:
    return [
        Route("/live", live, methods=["GET", "HEAD"]),
        Route("/ready", ready, methods=["GET", "HEAD"]),
    ]
