"""What an auditor reads of the log, under ``/ledger``: the signed checkpoint, proofs, leaves.

Like Tessera's read API, everything here is either the newest signed statement (the
checkpoint, ``no-cache``) or follows from one and never changes (full pages of leaves,
full tiles: ``immutable``). The tree and the leaves are also served in the C2SP
tlog-tiles layout (``/ledger/tile/<L>/<N>[.p/<W>]``, ``/ledger/tile/entries/<N>[.p/<W>]``),
which any tlog-tiles client reads, and from which ``coffre audit --full`` recomputes the
tree. Proofs are computed from the perfect subtrees the integrator stored and
go no further than the latest checkpoint: a client never gets a proof for a tree size
the log has not signed, nor one that does not lead to its signed root
(``coffre.service.proving``: the stored tree is repaired from the leaves first).

Errors are OperationOutcomes, like everywhere else in the API: a request Coffre refuses
gets 400, a log the storage cannot prove from gets 500 (and a log line); a proof that
neither the stored tree nor the leaves can give so that it verifies, 503.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import re
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from coffre.api.metrics import integrity_failed
from coffre.api.state import records_of
from coffre.exceptions import FhirError, LogDamagedError
from coffre.ledger import (
    EMPTY_ROOT,
    Checkpoint,
    LedgerError,
    SignedTree,
    VerifierKey,
    open_checkpoint,
)
from coffre.ledger.note import b64
from coffre.ledger.tiles import TILE_HEIGHT, TILE_WIDTH, TileId, encode_bundle, tile_width
from coffre.search.results import single
from coffre.service import RecordStore
from coffre.service.ledger import MAP_KEY_BYTES, shorter_than_followed, stored_nodes
from coffre.service.proving import TreeProofs, UnprovableError
from coffre.service.witnessing import Witnessing

MAX_LEAVES = 1000
"""The most leaves one ``/ledger/leaves`` answer carries."""
IMMUTABLE = "public, max-age=31536000, immutable"
_WHOLE = re.compile(r"[0-9]{1,20}", re.ASCII)
log = logging.getLogger("coffre.api.ledger")


def _whole(request: Request, name: str, default: int | None = None) -> int:
    """A query parameter that must be a whole number, given once."""
    values = request.query_params.getlist(name)
    if not values and default is not None:
        return default
    if len(values) != 1:
        raise FhirError(400, "required", f"give {name} once, as a whole number")
    if not _WHOLE.fullmatch(values[0]):
        raise FhirError(
            400, "value", f"{name} is a whole number of at most 20 digits, not {values[0][:40]!r}"
        )
    return int(values[0])


def _signed_size(records: RecordStore) -> int:
    """The size of the latest checkpoint, 0 when the log has none yet."""
    return _signed(records).size


def _signed(records: RecordStore) -> SignedTree:
    """The size and root of the latest checkpoint; the empty tree's when there is none."""
    note = records.storage.latest_checkpoint()
    if note is None:
        return SignedTree(0, EMPTY_ROOT)
    try:
        checkpoint = _opened(note, records.ledger.verifier_key)
    except LedgerError as error:
        raise _unprovable(error) from None
    return SignedTree(checkpoint.size, checkpoint.root)


@functools.lru_cache(maxsize=4)
def _opened(note: str, key: VerifierKey) -> Checkpoint:
    """A checkpoint once its signature is checked: once per new checkpoint, not per
    request (an auditor fetches thousands of tiles of one checkpoint)."""
    return open_checkpoint(note, key)


def _unprovable(error: LedgerError) -> FhirError:
    log.error("the log in storage cannot serve a proof: %s", error)
    integrity_failed(error)
    return FhirError(500, "exception", f"the log in storage is damaged: {error}")


async def _proof(records: RecordStore, prove: Callable[[TreeProofs], list[bytes]]) -> list[str]:
    """A proof, verified against the signed root, as base64 hashes. In a thread: a stored
    tree the host altered is rebuilt from the leaves first, the whole log's."""
    try:
        hashes = await asyncio.to_thread(prove, records.proofs)
    except UnprovableError as error:
        integrity_failed(error)
        raise FhirError(
            503, "exception", f"the log in storage is damaged, no proof can be given: {error}"
        ) from None
    except LedgerError as error:
        raise _unprovable(error) from None
    return [b64(h) for h in hashes]


async def checkpoint(request: Request) -> Response:
    """The latest checkpoint as the storage holds it, signature lines and all, with the
    witnesses' cosignatures once they cosigned it. One older than the log this server
    followed is the storage rolled back under it (503): a new auditor would accept it."""
    records = records_of(request)
    note = records.storage.latest_checkpoint()
    if note is None:
        raise FhirError(404, "not-found", "the log has no checkpoint yet: nothing was written")
    _check_not_older(records, note)
    cosigned = _cosigned(request)
    if cosigned is not None and cosigned.startswith(note):
        note = cosigned
    return PlainTextResponse(note, headers={"Cache-Control": "no-cache"})


def _check_not_older(records: RecordStore, note: str) -> None:
    """Refuse a checkpoint of fewer leaves than this server followed; one that does not
    verify is served as it is, for auditors to report."""
    try:
        size = _opened(note, records.ledger.verifier_key).size
    except LedgerError:
        return
    if size < records.latest_writes.known:
        raise shorter_than_followed(size, records.latest_writes.known)


async def cosigned_checkpoint(request: Request) -> Response:
    """The newest checkpoint a quorum of the witnesses cosigned (docs/witness.md)."""
    witnessing = _witnessing(request)
    if witnessing is None:
        message = (
            "this server gathers no cosignatures: it was started without COFFRE_WITNESSES"
            " (docs/witness.md)"
        )
        raise FhirError(404, "not-found", message)
    note = witnessing.published()
    if note is None:
        raise FhirError(404, "not-found", "no checkpoint of this log is cosigned yet")
    return PlainTextResponse(note, headers={"Cache-Control": "no-cache"})


def _witnessing(request: Request) -> Witnessing | None:
    witnessing: Witnessing | None = getattr(request.app.state, "witnessing", None)
    return witnessing


def _cosigned(request: Request) -> str | None:
    witnessing = _witnessing(request)
    return None if witnessing is None else witnessing.published()


async def verifier_key(request: Request) -> Response:
    """The log's verifier key. An auditor takes it from the vault's owner, not from here."""
    return PlainTextResponse(f"{records_of(request).ledger.verifier_key}\n")


async def inclusion(request: Request) -> Response:
    index, size = _whole(request, "index"), _whole(request, "size")
    records = records_of(request)
    signed = _signed(records)
    if size > signed.size:
        raise FhirError(
            400, "value", f"size {size} is beyond the latest checkpoint ({signed.size})"
        )
    if index >= size:
        raise FhirError(400, "value", f"no leaf {index} in a tree of size {size}")
    proof = await _proof(records, lambda proofs: proofs.inclusion(signed, index, size))
    return JSONResponse({"index": index, "size": size, "proof": proof})


async def consistency(request: Request) -> Response:
    old, new = _whole(request, "old"), _whole(request, "new")
    records = records_of(request)
    signed = _signed(records)
    if new > signed.size:
        raise FhirError(400, "value", f"new {new} is beyond the latest checkpoint ({signed.size})")
    if old > new:
        raise FhirError(400, "value", f"old {old} is larger than new {new}")
    proof = await _proof(records, lambda proofs: proofs.consistency(signed, old, new))
    return JSONResponse({"old": old, "new": new, "proof": proof})


async def leaves(request: Request) -> Response:
    """Leaves ``[start, start + count)`` of the signed tree; fewer at its end."""
    start, count = _whole(request, "start"), _whole(request, "count", MAX_LEAVES)
    if count == 0:
        raise FhirError(400, "value", "count is at least 1")
    count = min(count, MAX_LEAVES)
    records = records_of(request)
    signed = _signed_size(records)
    end = min(start + count, signed)
    data = _leaves_before_any_gap(records, start, end) if start < end else []
    complete = len(data) == count
    return JSONResponse(
        {"start": start, "leaves": [b64(leaf) for leaf in data]},
        headers={"Cache-Control": IMMUTABLE if complete else "no-cache"},
    )


def _leaves_before_any_gap(records: RecordStore, start: int, end: int) -> list[bytes]:
    """Leaves ``[start, end)``, or those before the first the host removed from the middle
    of the log: an auditor sees the rest missing from what the log signed, where a 500
    would leave it no verdict. The gap is an integrity failure, counted and logged, but
    not a leaf: anyone may ask /ledger, and would grow the log at will."""
    try:
        return records.storage.leaves(start, end)
    except LogDamagedError as error:
        log.error("the log in storage has leaves missing: %s", error)
        integrity_failed(error)
    whole, missing = 0, end - start  # leaves [start, start + whole) are all there
    while missing - whole > 1:
        middle = (whole + missing) // 2
        if _all_there(records, start, start + middle):
            whole = middle
        else:
            missing = middle
    return records.storage.leaves(start, start + whole)


def _all_there(records: RecordStore, start: int, end: int) -> bool:
    try:
        return len(records.storage.leaves(start, end)) == end - start
    except LogDamagedError:
        return False


async def tile(request: Request) -> Response:
    """A hash tile or an entry bundle (c2sp.org/tlog-tiles) of the latest checkpoint's tree.

    Served only when the latest checkpoint covers it whole; partial tiles of any width it
    covers (an older checkpoint's too). Leaves the storage lacks are left out of a bundle,
    for the auditor to see, never made up.
    """
    path = request.path_params["path"]
    wanted = TileId.parse(path)
    if wanted is None:
        raise FhirError(404, "not-found", "no such tile: see c2sp.org/tlog-tiles for the paths")
    records = records_of(request)
    signed = _signed_size(records)
    if tile_width(signed, wanted.level or 0, wanted.index) < wanted.width:
        raise FhirError(
            404, "not-found", f"tile/{path} is beyond the latest checkpoint (size {signed})"
        )
    start = wanted.index * TILE_WIDTH
    if wanted.level is None:
        entries = _leaves_before_any_gap(records, start, start + wanted.width)
        try:
            body = encode_bundle(entries)
        except LedgerError as error:
            raise _unprovable(error) from None
    else:
        entries = stored_nodes(
            records.storage, TILE_HEIGHT * wanted.level, start, start + wanted.width
        )
        body = b"".join(entries)
    complete = len(entries) == wanted.width
    if wanted.level is not None and not complete:
        raise _unprovable(LedgerError(f"the tree lacks nodes of tile/{path}"))
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Cache-Control": IMMUTABLE if complete and not wanted.partial else "no-cache"},
    )


async def map_proof(request: Request) -> Response:
    """That the latest write at an opaque ``?location=`` (base64, as the answers give it)
    is the one the map of a signed checkpoint holds, or that nothing was written there.
    A record is named only to ``[base]/Type/id/$map-proof``, under the API's
    authorisation: named here, anyone (the host first) would learn whether it exists,
    when it changes and which rows are its."""
    pairs = list(request.query_params.multi_items())
    if any(name == "record" for name, _ in pairs):
        raise FhirError(
            400,
            "not-supported",
            "the public map proof takes a location=, never a record's name; a client that may"
            " read a record asks [base]/Type/id/$map-proof, which gives its location too",
        )
    text = single(pairs, "location") or ""
    loc = _location(text)
    if loc is None:
        raise FhirError(
            400, "value", f"location is the base64 of {MAP_KEY_BYTES} bytes, as proofs give it"
        )
    return map_proof_response(records_of(request), loc)


def _location(text: str) -> bytes | None:
    try:
        loc = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return loc if len(loc) == MAP_KEY_BYTES else None


def map_proof_response(records: RecordStore, loc: bytes, **named: str) -> Response:
    """The map proof of ``loc`` against the checkpoint the map is at; ``named``: what the
    answer adds (the record an authorised reader named)."""
    size, value, proof = records.latest_writes.prove(records.storage, loc)
    note = records.storage.checkpoint_at(size)
    if note is None:
        raise FhirError(404, "not-found", "the log has no checkpoint yet: nothing was written")
    return JSONResponse(
        {
            **named,
            "location": b64(loc),
            "checkpoint": note,
            "value": None if value is None else b64(value),
            "proof": {
                "depth": proof.depth,
                "bitmap": b64(proof.bitmap),
                "siblings": [b64(h) for h in proof.siblings],
                "neighbour": None
                if proof.neighbour is None
                else [b64(part) for part in proof.neighbour],
            },
        },
        headers={"Cache-Control": "no-cache"},
    )


def ledger_routes() -> list[Route]:
    return [
        Route("/checkpoint", checkpoint, methods=["GET"]),
        Route("/checkpoint/cosigned", cosigned_checkpoint, methods=["GET"]),
        Route("/key", verifier_key, methods=["GET"]),
        Route("/proof/inclusion", inclusion, methods=["GET"]),
        Route("/proof/consistency", consistency, methods=["GET"]),
        Route("/leaves", leaves, methods=["GET"]),
        Route("/tile/{path:path}", tile, methods=["GET"]),
        Route("/proof/map", map_proof, methods=["GET"]),
    ]
