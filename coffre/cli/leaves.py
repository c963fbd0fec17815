"""The leaves ``coffre audit --full`` checks: the log's entry bundles (c2sp.org/tlog-tiles).

Each bundle is checked on its own: its leaves must be as many as the checkpoint says,
each must decode as a leaf (``coffre.ledger.leaf.undecodable``: what ``Leaf.decode``
refuses, without building a Leaf of each), and they are hashed into the roots of the
bundle's perfect subtrees, which the auditor then joins into the tree's root. Nothing
the server computed is used: no hash tile, no stored node.

A million leaves is ~3,900 bundles and, in Python, seconds of CPU to hash and decode: a
large log is checked by a pool of processes (one per core, up to four), each fetching
its share of bundles over its own keep-alive connections (two per process, so that one
bundle downloads while the one before is hashed) with a minimal HTTP/1.1 client
(``Connection``): per bundle, httpx spends about 0.9 ms of CPU, ``http.client`` 0.17 ms,
``Connection`` 0.08 ms. A small log is checked in this process, over the auditor's own
client.
"""

from __future__ import annotations

import json
import multiprocessing
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import BinaryIO, NamedTuple
from urllib.parse import urlsplit

from coffre.exceptions import CoffreError
from coffre.ledger import LedgerError
from coffre.ledger.leaf import Leaf, undecodable
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
MAX_LINE, MAX_HEADERS = 8192, 100


class Unanswered(CoffreError):
    """The server did not answer a bundle with one: no verdict can follow."""


class BundleCheck(NamedTuple):
    """What one entry bundle holds: how many leaves, the roots of their perfect subtrees,
    and how many do not decode as leaves (the first few described)."""

    served: int
    roots: list[bytes]
    malformed: int
    shown: list[str]


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
    return BundleCheck(len(entries), roots, len(malformed), shown)


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
    fetching from ``base_url``. Leaving the block
    stops the processes, done or not."""
    if processes < 2 or len(tiles) <= CHUNK:
        yield (check_bundle(fetch(tile.path()), tile) for tile in tiles)
        return
    chunks = [tiles[i : i + CHUNK] for i in range(0, len(tiles), CHUNK)]
    processes = min(processes, MAX_PROCESSES, len(chunks))
    # spawn: a fresh interpreter, whatever threads the caller runs (fork would copy them).
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, _start, (base_url, timeout)) as pool:
        yield (check for checks in pool.imap(_check_chunk, chunks) for check in checks)


class Connection:
    """One keep-alive HTTP/1.1 connection that GETs bodies, for a pool process.

    What ``http.client`` does for a bundle at half its CPU (it parses each answer's headers
    with the email package): the auditor needs only a status, a body of a Content-Length
    or chunked, and to know when the server closes. Every read is bounded.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base = urlsplit(base_url)
        if self.base.scheme not in ("http", "https") or not self.base.hostname:
            raise Unanswered(f"{base_url} is no http(s) URL")
        self.host = self.base.netloc.rpartition("@")[2]
        self.timeout = timeout
        self._socket: socket.socket | None = None
        self._stream: BinaryIO | None = None

    def get(self, path: str) -> tuple[int, bytes]:
        """The status and body of ``GET <base path><path>``; Unanswered if there is none."""
        target = f"{self.base.path.rstrip('/')}{path}"
        try:
            return self._get(target)
        except (OSError, ValueError) as error:
            self.close()
            raise Unanswered(f"GET {target} failed: {error!r}") from None
        except Unanswered:
            self.close()
            raise

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._socket is not None:
            self._socket.close()
        self._socket = self._stream = None

    def _get(self, target: str) -> tuple[int, bytes]:
        if self._socket is None:
            self._open()
        assert self._socket is not None and self._stream is not None
        request = f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\nAccept-Encoding: identity\r\n\r\n"
        self._socket.sendall(request.encode("ascii"))
        status_line = self._line().split(None, 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise Unanswered(f"GET {target} answered no HTTP/1.x status line")
        version, status = status_line[0], int(status_line[1])
        headers: dict[bytes, bytes] = {}
        for _ in range(MAX_HEADERS + 1):
            if not (line := self._line().strip()):
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        else:
            raise Unanswered(f"GET {target} answered over {MAX_HEADERS} header lines")
        if headers.get(b"transfer-encoding") == b"chunked":
            body = self._chunked()
        elif b"content-length" in headers:
            body = self._exactly(int(headers[b"content-length"]))
        else:  # the body runs to the end of the connection
            body = self._stream.read(MAX_BODY + 1)
            headers[b"connection"] = b"close"
        if len(body) > MAX_BODY:
            raise Unanswered(f"GET {target} answered over {MAX_BODY} bytes")
        if headers.get(b"connection") == b"close" or version == b"HTTP/1.0":
            self.close()
        return status, body

    def _open(self) -> None:
        port = self.base.port or (443 if self.base.scheme == "https" else 80)
        connection = socket.create_connection((self.base.hostname, port), self.timeout)
        if self.base.scheme == "https":
            context = ssl.create_default_context()
            connection = context.wrap_socket(connection, server_hostname=self.base.hostname)
        self._socket, self._stream = connection, connection.makefile("rb")

    def _line(self) -> bytes:
        assert self._stream is not None
        line = self._stream.readline(MAX_LINE + 1)
        if not line.endswith(b"\n") or len(line) > MAX_LINE:
            raise Unanswered("the server's answer ended, or has a line too long")
        return line

    def _exactly(self, size: int) -> bytes:
        assert self._stream is not None
        if not 0 <= size <= MAX_BODY:
            raise Unanswered(f"the server announced a body of {size} bytes")
        body = self._stream.read(size)
        if len(body) != size:
            raise Unanswered(f"the server's answer ended after {len(body)} of {size} bytes")
        return body

    def _chunked(self) -> bytes:
        chunks, total = [], 0
        while size := int(self._line().split(b";")[0], 16):
            total += size
            if total > MAX_BODY:
                raise Unanswered(f"the server's answer runs over {MAX_BODY} bytes")
            chunks.append(self._exactly(size))
            self._line()  # the CRLF after the chunk
        while self._line().strip():  # trailers
            pass
        return b"".join(chunks)


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
    except (ValueError, LookupError, TypeError):
        return ""
    return f": {issue}" if isinstance(issue, str) else ""
