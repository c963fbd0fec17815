"""The leaves ``coffre audit --full`` checks: the log's entry bundles (c2sp.org/tlog-tiles).

Each bundle is checked on its own: its leaves must be as many as the checkpoint says,
each must decode as a leaf (``coffre.ledger.leaf.undecodable``: what ``Leaf.decode``
refuses, without building a Leaf of each), and they are hashed into the roots of the
bundle's perfect subtrees, which the auditor then joins into the tree's root. Nothing
the server computed is used: no hash tile, no stored node.

A million leaves is ~3,900 bundles and, in Python, seconds of CPU to hash and decode: a
large log is checked by a pool of processes (one per core, up to four), each fetching
its share of bundles over its own keep-alive connections (two per process, so that one
bundle downloads while the one before is hashed) with ``http.client`` (per bundle,
httpx spends about 0.9 ms of CPU, ``http.client`` 0.17 ms). A small log is checked in
this process, over the auditor's own client.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from multiprocessing.pool import IMapIterator
from typing import NamedTuple
from urllib.parse import urlsplit

from coffre.exceptions import CoffreError
from coffre.ledger import LedgerError
from coffre.ledger.leaf import Leaf, LeafKind, kind_bytes, map_updates, undecodable
from coffre.ledger.tiles import MAX_ENTRY_BYTES, TILE_WIDTH, TileId, bundle_roots, split_bundle

CHUNK = 64
"""Bundles a process fetches and checks per task: 16,384 leaves."""
FETCHERS = 2
"""Connections per process."""
MAX_PROCESSES = 4
"""More processes than this would only queue on the server."""
SHOWN = 10
"""Malformed leaves described per bundle; the others are only counted."""
MAX_BODY = TILE_WIDTH * (2 + MAX_ENTRY_BYTES)
"""The largest entry bundle there can be."""


class Unanswered(CoffreError):
    """The server did not answer a bundle with one: no verdict can follow."""


class BundleCheck(NamedTuple):
    """What one entry bundle holds: how many leaves, the roots of their perfect subtrees,
    how many do not decode as leaves (the first few described), how many of each kind,
    where the first few integrity failures the gateway logged are, and what its leaves
    set in the verifiable map (each record's latest write in the bundle)."""

    served: int
    roots: list[bytes]
    malformed: int
    shown: list[str]
    kinds: Counter[int]
    integrity: list[int]
    map_updates: dict[bytes, bytes]


def check_bundle(data: bytes, tile: TileId) -> BundleCheck:
    """Check the bundle served for ``tile``: Unanswered if it is no bundle of at most the
    leaves asked for (the server answered something else than what was asked)."""
    try:
        entries = split_bundle(data)
    except LedgerError as error:
        raise Unanswered(f"{tile.path()} is not an entry bundle: {error}") from None
    if len(entries) > tile.width:
        raise Unanswered(f"{tile.path()} holds {len(entries)} leaves, more than asked")
    malformed = undecodable(entries)
    shown = [
        _why(entries[position], tile.index * TILE_WIDTH + position)
        for position in malformed[:SHOWN]
    ]
    roots = bundle_roots(entries) if len(entries) == tile.width else []
    kinds = kind_bytes(entries)
    counts: Counter[int] = Counter({kind: n for kind in LeafKind if (n := kinds.count(kind))})
    first = tile.index * TILE_WIDTH
    integrity = [first + at for at in _positions(kinds, LeafKind.INTEGRITY)][:SHOWN]
    return BundleCheck(
        len(entries), roots, len(malformed), shown, counts, integrity, map_updates(entries)
    )


def _positions(data: bytes, value: int) -> Iterator[int]:
    at = data.find(value)
    while at >= 0:
        yield at
        at = data.find(value, at + 1)


def _why(entry: bytes, index: int) -> str:
    try:
        Leaf.decode(entry)
    except LedgerError as error:
        return f"malformed leaf at index {index}: {error}"
    raise AssertionError(f"leaf {index} decodes after all")


@contextmanager
def bundle_checks(
    tiles: Sequence[TileId],
    fetch: Callable[[str], bytes],
    base_url: str,
    processes: int,
    timeout: float,
) -> Iterator[Iterator[BundleCheck]]:
    """The checks of ``tiles``' bundles, in their order: in this process, ``fetch`` getting
    each by its path, unless there are more than ``CHUNK`` of them and ``processes`` is
    above 1; then in that many processes (at most ``MAX_PROCESSES``, one per ``CHUNK``)
    fetching from ``base_url``, each chunk checked within ``timeout`` seconds of the one
    before (a server that trickles a bundle never trips a socket's timeout; Unanswered
    then). Leaving the block stops the processes, done or not."""
    if processes < 2 or len(tiles) <= CHUNK:
        yield (check_bundle(fetch(tile.path()), tile) for tile in tiles)
        return
    chunks = [tiles[i : i + CHUNK] for i in range(0, len(tiles), CHUNK)]
    processes = min(processes, MAX_PROCESSES, len(chunks))
    # spawn: a fresh interpreter, whatever threads the caller runs (fork would copy them).
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, _start, (base_url, timeout)) as pool:
        checked = _in_time(pool.imap(_check_chunk, chunks), len(chunks), timeout)
        yield (check for checks in checked for check in checks)


def _in_time(
    checked: IMapIterator[list[BundleCheck]], count: int, timeout: float
) -> Iterator[list[BundleCheck]]:
    for _ in range(count):
        try:
            yield checked.next(timeout)
        except multiprocessing.TimeoutError:
            raise Unanswered(f"{CHUNK} bundles not answered within {timeout:g} s") from None


class Connection:
    """One keep-alive ``http.client`` connection that GETs bodies, for a pool process.

    ``http.client`` rather than httpx: it spends a fifth of httpx's CPU per bundle, which
    is most of what a pool process does besides hashing. Every body read is bounded.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base = urlsplit(base_url)
        if self.base.scheme not in ("http", "https") or not self.base.hostname:
            raise Unanswered(f"{base_url} is no http(s) URL")
        kind = HTTPSConnection if self.base.scheme == "https" else HTTPConnection
        self._http = kind(self.base.hostname, self.base.port, timeout=timeout)

    def get(self, path: str) -> tuple[int, bytes]:
        """The status and body of ``GET <base path><path>``; Unanswered if there is none."""
        target = f"{self.base.path.rstrip('/')}{path}"
        try:
            self._http.request("GET", target, headers={"Accept-Encoding": "identity"})
            response = self._http.getresponse()
            if response.length is not None and response.length > MAX_BODY:
                raise ValueError(f"a body of {response.length} bytes")
            # A known length is read whole (a short one raises); otherwise at most the bound.
            body = response.read() if response.length is not None else response.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise ValueError(f"over {MAX_BODY} bytes")
        except (OSError, HTTPException, ValueError) as error:
            self.close()
            raise Unanswered(f"GET {target} failed: {error!r}") from None
        return response.status, body

    def close(self) -> None:
        self._http.close()


class _Worker:
    """A pool process's fetchers and connections, one connection per fetcher thread."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.fetchers = ThreadPoolExecutor(FETCHERS)
        self.local = threading.local()

    def fetch(self, tile: TileId) -> bytes:
        connection: Connection | None = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = Connection(self.base_url, self.timeout)
        path = f"/ledger/{tile.path()}"
        status, body = connection.get(path)
        if status != 200:
            raise Unanswered(f"GET {path} answered HTTP {status}{diagnostics(body)}")
        return body


_worker: _Worker | None = None


def _start(base_url: str, timeout: float) -> None:
    global _worker
    _worker = _Worker(base_url, timeout)


def _check_chunk(tiles: Sequence[TileId]) -> list[BundleCheck]:
    assert _worker is not None, "a pool process starts with _start"
    fetched = _worker.fetchers.map(_worker.fetch, tiles)
    return [check_bundle(data, tile) for data, tile in zip(fetched, tiles, strict=True)]


def diagnostics(body: bytes) -> str:
    """What an OperationOutcome says, if an error's body is one."""
    try:
        issue = json.loads(body)["issue"][0]["diagnostics"]
    except (ValueError, LookupError, TypeError, RecursionError):
        return ""
    return f": {issue}" if isinstance(issue, str) else ""
