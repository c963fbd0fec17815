"""The figures a hospital's monitoring reads of the server (docs/operations.md#metrics):
the requests it answers and how long they take, its group commit, its log, the booking
waiting room, the integrity failures it caught. ``/metrics`` serves them
(``coffre/api/scraping.py``).

Every label comes from a small fixed set: the interaction a request is, named from its
method and the shape of its path and never from a segment of it, its status code, the
cause of a failed commit, the check that failed. No resource type, id, URL, query, user or
patient: the monitoring, perhaps a third party's, learns how busy the server is, not whom
or what it serves.

Several server processes (``coffre serve --workers N``) each write their figures in a
folder of the server run (prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``,
which ``coffre serve`` sets before the processes start and the library reads on import);
whichever process answers a scrape adds them up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from coffre.api.asgi import HttpLayer
from coffre.exceptions import (
    CommitUnknownError,
    CustodyError,
    IndexDamagedError,
    LogDamagedError,
    RolledBackError,
    SealError,
    StorageError,
    StorageFullError,
)
from coffre.ledger import LedgerError

disable_created_metrics()  # type: ignore[no-untyped-call]  # a `_created` series says nothing more

OTHER = "other"
_AREAS = {area: area for area in ("auth", "ledger", "portal", "research", "health", "metrics")}
"""The first segment of a path outside /fhir, and the interaction its requests are."""
_BY_METHOD = {
    "type": {
        "GET": "search",
        "HEAD": "search",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    },
    "instance": {
        "GET": "read",
        "HEAD": "read",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    },
}
BUNDLE_KINDS = ("transaction", "batch")
INTERACTIONS = (
    *sorted({*_BY_METHOD["type"].values(), *_BY_METHOD["instance"].values()}),
    "vread",
    "history",
    "bundle",
    *BUNDLE_KINDS,
    "capabilities",
    "operation",
    "booking",
    "export",
    *_AREAS,
    OTHER,
)
_NOTED = "coffre.interaction"
"""Where a route names its interaction more closely than its path can (a Bundle's type)."""

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "coffre_http_requests",
    "HTTP requests answered, by interaction and status code.",
    ["interaction", "code"],
)
DURATION = Histogram(
    "coffre_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by interaction.",
    ["interaction"],
    buckets=_SECONDS,
)
COMMIT_REQUESTS = Histogram(
    "coffre_commit_requests",
    "Requests written (and accesses logged) per group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
LOCK_WAIT = Histogram(
    "coffre_commit_lock_wait_seconds",
    "Time a request's writes waited, from their queueing, for their commit to hold the write lock.",
    buckets=_SECONDS,
)
LOCK_HELD = Histogram(
    "coffre_commit_lock_held_seconds",
    "Time a group commit held the write lock, to its commit durable.",
    buckets=_SECONDS,
)
COMMIT_CAUSES = (
    "storage_unavailable",
    "disk_full",
    "commit_unknown",
    "rolled_back",
    "integrity",
    "custody",
    OTHER,
)
COMMITS_FAILED = Counter(
    "coffre_commits_failed",
    "Group commits that failed whole (nothing of them stands), by cause.",
    ["cause"],
)
LEDGER_LEAVES = Gauge(
    "coffre_ledger_leaves",
    "Leaves of the log (every write and every access) the server followed.",
    multiprocess_mode="max",
)
CHECKPOINT_TIME = Gauge(
    "coffre_ledger_checkpoint_timestamp_seconds",
    "When the newest checkpoint was signed: the time of the newest leaf it covers.",
    multiprocess_mode="max",
)
BOOKING_WAITING = Gauge(
    "coffre_booking_waiting_requests",
    "Booking requests waiting their turn in the waiting room.",
    multiprocess_mode="livesum",
)
BOOKING_SERVING = Gauge(
    "coffre_booking_serving_requests",
    "Booking requests being served.",
    multiprocess_mode="livesum",
)
BOOKING_TURNED_AWAY = Counter(
    "coffre_booking_turned_away",
    "Booking requests turned away with a 503, the waiting room full.",
)
CHECKS = ("record", "log", "index")
INTEGRITY_FAILURES = Counter(
    "coffre_integrity_failures",
    "What the storage served that failed its check (a record, the log, the search index).",
    ["check"],
)

# Every series exists from the start, at 0: an alert on a rate sees the first failure.
_DURATIONS = {name: DURATION.labels(name) for name in INTERACTIONS}
_FAILED_COMMITS = {cause: COMMITS_FAILED.labels(cause) for cause in COMMIT_CAUSES}
_INTEGRITY = {check: INTEGRITY_FAILURES.labels(check) for check in CHECKS}
_answered: dict[tuple[str, int], Counter] = {}


def interaction_of(method: str, path: str) -> str:
    """The interaction a request is, from its method and the shape of its path alone."""
    area, _, rest = path[1:].partition("/")
    if area != "fhir":
        return _AREAS.get(area, OTHER)
    if "$" in rest:
        operation = ("/" + rest).partition("/$")[2].partition("/")[0]
        if operation:
            return _OPERATIONS.get(
                operation, "export" if operation[:6] == "export" else "operation"
            )
    if not rest:
        return {"POST": "bundle", "GET": "search"}.get(method, OTHER)
    parts = rest.split("/")
    if parts[0] in ("metadata", ".well-known"):
        return "capabilities"
    if parts[0] in ("_history", "_search"):
        return parts[0][1:]
    return _of_resource(method, parts)


_OPERATIONS = {"find": "booking", "book": "booking"}


def _of_resource(method: str, parts: list[str]) -> str:
    """The interaction of a path under a resource type: ``Type``, ``Type/id`` and on."""
    if len(parts) == 1:
        return _BY_METHOD["type"].get(method, OTHER)
    if parts[1] in ("_history", "_search"):
        return parts[1][1:] if len(parts) == 2 else OTHER
    if len(parts) == 2:
        return _BY_METHOD["instance"].get(method, OTHER)
    if parts[2] == "_history":
        return "history" if len(parts) == 3 else "vread" if len(parts) == 4 else OTHER
    return OTHER


def note_interaction(request: Request, name: str) -> None:
    """Count ``request`` as ``name`` (one of ``INTERACTIONS``), which its path could not tell."""
    request.scope[_NOTED] = name


class MeasureRequests(HttpLayer):
    """Counts every HTTP request by interaction and status, and times it. The outermost
    layer, so that it sees the answer the client gets; pure ASGI, a few microseconds."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # an error that escapes every layer ends the connection: a 500 to count

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            name = scope.get(_NOTED) or interaction_of(scope["method"], scope["path"])
            _DURATIONS[name].observe(time.perf_counter() - started)
            _answered_as(name, status).inc()


def _answered_as(name: str, status: int) -> Counter:
    counter = _answered.get((name, status))
    if counter is None:
        counter = _answered[name, status] = REQUESTS.labels(name, str(status))
    return counter


def integrity_failed(error: Exception) -> None:
    """Count a check that what the storage served failed."""
    check = (
        "index"
        if isinstance(error, IndexDamagedError)
        else "log"
        if isinstance(error, LedgerError | LogDamagedError)
        else "record"
    )
    _INTEGRITY[check].inc()


_CAUSES: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    (StorageFullError, "disk_full"),
    (CommitUnknownError, "commit_unknown"),
    (RolledBackError, "rolled_back"),
    ((SealError, LedgerError, IndexDamagedError), "integrity"),
    (StorageError, "storage_unavailable"),
    (CustodyError, "custody"),
)
"""Why a commit failed, in the words of ``COMMIT_CAUSES``: the first that fits."""


def _cause(error: Exception) -> str:
    return next((cause for kind, cause in _CAUSES if isinstance(error, kind)), OTHER)


class CommitMetrics:
    """The group commit's figures (a ``CommitObserver``)."""

    def committed(self, waits: Sequence[float], held: float) -> None:
        COMMIT_REQUESTS.observe(len(waits))
        for wait in waits:
            LOCK_WAIT.observe(wait)
        LOCK_HELD.observe(held)

    def failed(self, error: Exception) -> None:
        _FAILED_COMMITS[_cause(error)].inc()

    def followed(self, leaves: int, newest_us: int) -> None:
        LEDGER_LEAVES.set(leaves)
        CHECKPOINT_TIME.set(newest_us / 1_000_000)


class RoomMetrics:
    """The booking waiting room's figures (a ``RoomObserver``)."""

    def occupancy(self, waiting: int, serving: int) -> None:
        BOOKING_WAITING.set(waiting)
        BOOKING_SERVING.set(serving)

    def turned_away(self) -> None:
        BOOKING_TURNED_AWAY.inc()
