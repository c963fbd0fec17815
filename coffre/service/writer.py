"""The writes of one storage transaction (``Writer``): each version sealed, indexed and
logged, and each request's AuditEvents sealed before its leaves commit to them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coffre.exceptions import FhirError, SealError
from coffre.fhir import json
from coffre.fhir.references import parse_reference
from coffre.fhir.validation import check_url_type, validate
from coffre.ledger.leaf import NO_DIGEST, Leaf, LeafKind, index_digest
from coffre.seal import random_key
from coffre.seal.padding import pad
from coffre.search import Criterion
from coffre.service.audit import Access, audit_event
from coffre.service.conditions import check_if_match
from coffre.service.indexing import OwnTokens, write_tokens
from coffre.service.ledger import Appended
from coffre.service.searching import Scope
from coffre.service.slots import keep_slots
from coffre.service.stored import (
    Outcome,
    Stored,
    check_id,
    event_associated,
    instant,
    new_id,
    now_us,
    version_associated,
)
from coffre.storage.base import (
    SealedEvent,
    SealedVersion,
    StorageTxn,
)

if TYPE_CHECKING:
    from coffre.service.records import RecordStore


def _id_mismatch(resource: dict[str, Any], resource_id: str) -> str:
    if "id" not in resource:
        return f'the body has no id; an update carries the id of its URL: "id": "{resource_id}"'
    return f"the body's id {resource['id']!r} differs from the id in the URL {resource_id!r}"


def check_body_id(resource_type: str, resource_id: str, resource: dict[str, Any]) -> None:
    """An update's body carries the id of its URL (R4 http.html#update): 400 otherwise."""
    if resource.get("id") != resource_id:
        raise FhirError(400, "invalid", _id_mismatch(resource, resource_id), f"{resource_type}.id")


def same_content(current: Stored, resource: dict[str, Any]) -> bool:
    """Whether a write would store what the current version holds, server meta aside;
    as written, so that a change of a decimal's precision (7.2 to 7.20) is a change. Most
    writes change a value, which the plain comparison tells; the written forms are
    compared only when the values are equal (a file imported again)."""
    trimmed = _without_server_meta(resource)
    if _without_server_meta(current.resource()) != trimmed:
        return False
    precise = _without_server_meta(json.loads(current.body))
    return json.canonical(precise) == json.canonical(trimmed)


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {
        k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")
    }
    trimmed = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        trimmed["meta"] = meta
    return trimmed


@dataclass(frozen=True, slots=True)
class _Logged:
    """A leaf waiting for the AuditEvent of its request and compartment."""

    leaf: Leaf
    comp: bytes
    version_reference: str | None


class Writer:
    """The writes of one storage transaction.

    Leaves wait in ``_pending`` until the request that made them ends (``seal_events``):
    only then is its AuditEvent complete, and each leaf can commit to it.
    """

    def __init__(self, records: RecordStore, txn: StorageTxn, access: Access) -> None:
        self.records = records
        self.txn = txn
        self.access = access
        self.fresh_keys: dict[bytes, bytes] = {}
        self.written: set[bytes] = set()
        self.appended: list[Appended] = []
        self._pending: list[_Logged] = []
        # What each record's latest version is, as this transaction has checked or written
        # it (None: nothing there): under the write lock nothing else changes it.
        self._latest: dict[bytes, Stored | None] = {}
        self._newest = 0  # the time of this transaction's newest write
        # Nothing is written yet: the log's end is what is committed, under our lock.
        records.latest_writes.catch_up(txn)

    def key(self, comp: bytes) -> bytes | None:
        """A data key as this transaction sees it, its own new keys included."""
        key = self.fresh_keys.get(comp) or self.records.cached_key(comp)
        if key is None:
            key = self.records.opened_key(comp, self.txn.wrapped_key(comp), followed=True)
            if key is not None:
                self.fresh_keys[comp] = key
        return key

    def _key_for_write(self, comp: bytes) -> bytes:
        self.records.check_not_erased(comp)  # an erased patient takes no new records
        key = self.key(comp)
        if key is None:
            key = random_key()
            wrapped = self.records.custodian.wrap(key)
            made = (wrapped.kek_id, wrapped.wrapped)
            if self.txn.put_wrapped_key(comp, *made) != made:  # we hold the write lock
                raise SealError()  # the storage gave another key than the one just made
            self.fresh_keys[comp] = key
            if not self.records.is_shared(comp):
                self.log_data_key(comp, key)
        return key

    def log_data_key(self, comp: bytes, key: bytes) -> None:
        """A leaf recording a patient's data key by its binding to their compartment, so
        that no other key passes for it; its AuditEvent goes to the gateway's compartment."""
        binding = self.records.keys.data_key_binding(comp, key)
        made = self._newest or now_us()  # the time of the write it was made for
        self.log_to_gateway([Leaf(LeafKind.DATA_KEY, comp, 0, binding, made)], None)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Writes that fail together without failing the rest of the transaction."""
        keys_before, written_before = dict(self.fresh_keys), set(self.written)
        pending_before, appended_before = len(self._pending), len(self.appended)
        try:
            with self.txn.savepoint():
                yield
        except BaseException:
            self.fresh_keys, self.written = keys_before, written_before
            self._latest.clear()  # what the rolled-back writes left is not the latest
            del self._pending[pending_before:]
            del self.appended[appended_before:]
            raise

    @contextmanager
    def request(self, access: Access) -> Iterator[None]:
        """The writes and accesses of one request, all or nothing, audited as ``access``'s."""
        self.seal_events()
        with self.savepoint():
            self.access = access
            yield
            self.seal_events()

    def seal_events(self) -> None:
        """Seal an AuditEvent per kind and compartment of the leaves waiting, then append
        the leaves, in the order of the writes, each committing to its event."""
        while self._pending:  # sealing an event may make the gateway's key, and its leaf
            self._seal_pending()

    def _seal_pending(self) -> None:
        pending, self._pending = self._pending, []
        start = self.txn.leaf_count()
        groups: dict[tuple[LeafKind, bytes], list[int]] = {}
        for position, logged in enumerate(pending):
            groups.setdefault((logged.leaf.kind, logged.comp), []).append(position)
        recorded = instant(max(logged.leaf.ts for logged in pending))
        event_of: dict[int, bytes] = {}
        events: list[SealedEvent] = []
        for (kind, comp), positions in groups.items():
            versions = [
                reference
                for reference in (pending[position].version_reference for position in positions)
                if reference
            ]
            event = audit_event(self.access, kind, versions, recorded)
            sealed = self.records.envelope.close(
                self._key_for_write(comp), pad(json.canonical(event)), event_associated(comp)
            )
            digest = hashlib.sha256(sealed).digest()
            events.append(SealedEvent(digest, comp, start + positions[0], sealed))
            event_of.update(dict.fromkeys(positions, digest))
        self.txn.append_events(events)
        self.record([logged.leaf.with_event(event_of[i]) for i, logged in enumerate(pending)])

    def record(self, leaves: list[Leaf]) -> None:
        """Append leaves to the log; the transaction integrates them when it ends."""
        stored = self.records.ledger.record(self.txn, leaves)
        self.appended.extend(zip(leaves, stored, strict=True))

    def find(
        self,
        resource_type: str,
        criteria: tuple[Criterion, ...],
        admit: Callable[[Stored], bool] | None = None,
    ) -> list[Stored]:
        """``admit``: what the search may use at all, matches, chains and ``_has`` alike
        (``Scope.admit``)."""
        return self.records.find(resource_type, criteria, self.scope(admit=admit))

    def scope(
        self,
        *,
        base: str | None = None,
        as_of: int | None = None,
        admit: Callable[[Stored], bool] | None = None,
        within: str | None = None,
    ) -> Scope:
        """This transaction's view of the records, for a search (the options: ``Scope``'s)."""
        return Scope(
            self.txn,
            self.key,
            self.written,  # read during the search only, not copied for it
            base=base,
            as_of=as_of,
            admit=admit,
            within=within,
        )

    def new_id(self, resource_type: str, drawn: str | None = None) -> str:
        """A server-chosen id, known to have nothing stored under it: a random UUID's
        location is a keyed hash the host cannot have planted a record at (a row there
        would make the insert fail, never be buried). ``drawn``: one that ``new_id()``
        drew before the write lock."""
        resource_id = drawn or new_id()
        self._latest[self.records.keys.location(resource_type, resource_id)] = None
        return resource_id

    def vread(self, resource_type: str, resource_id: str, version: str) -> Stored:
        """A version of a record as this transaction sees it, those it wrote included."""
        return self.records.vread(resource_type, resource_id, version, self.txn, self.key)

    def deletion(self, resource_type: str, resource_id: str, version: int) -> Stored:
        """The version ``vread`` refused as a deletion, as this transaction sees it."""
        return self.records.deletion(resource_type, resource_id, version, self.txn, self.key)

    def latest(self, resource_type: str, resource_id: str) -> Stored | None:
        """The current version a write builds on, checked against the log unless this
        transaction wrote it: a write must never bury a version the host put back."""
        loc = self.records.keys.location(resource_type, resource_id)
        if loc in self._latest:
            return self._latest[loc]
        sealed = self.txn.latest(loc)
        if loc not in self.written and not self.records.is_logged_latest(loc, sealed, self.txn):
            raise SealError()
        opened = (
            None
            if sealed is None
            else self.records.open(resource_type, resource_id, sealed, self.key)
        )
        self._latest[loc] = opened
        return opened

    def create(
        self,
        resource: dict[str, Any],
        resource_id: str | None = None,
        *,
        validated: bool = False,
        own_tokens: OwnTokens | None = None,
        booking: bool = False,
    ) -> Outcome:
        """A new resource, under an id of the server's choosing unless a bundle chose it.

        ``validated`` skips the schema check for a resource already checked with its
        Bundle; ``own_tokens``: its index tokens computed ahead (``RecordStore.own_tokens``);
        ``booking``: $book's Appointment, whose seats it checked (``service.booking``).
        """
        resource_type = resource["resourceType"] if validated else validate(resource)
        resource["id"] = resource_id or self.new_id(resource_type)
        return self._put(resource_type, resource["id"], resource, None, own_tokens, booking)

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        if_match: int | None = None,
        *,
        validated: bool = False,
        own_tokens: OwnTokens | None = None,
    ) -> Outcome:
        """Update, or create at a client's id (update-as-create)."""
        check_id(resource_type, resource_id)
        check_url_type(resource["resourceType"] if validated else validate(resource), resource_type)
        check_body_id(resource_type, resource_id, resource)
        return self._put(resource_type, resource_id, resource, if_match, own_tokens)

    def delete(
        self, resource_type: str, resource_id: str, if_match: int | None = None
    ) -> Outcome | None:
        """Delete (history kept); None when there was nothing to delete."""
        check_id(resource_type, resource_id)
        current = self.latest(resource_type, resource_id)
        check_if_match(f"{resource_type}/{resource_id}", current, if_match)
        if current is None or current.deleted:
            return None
        keep_slots(self, resource_type, resource_id, current, None)
        tombstone = {"resourceType": resource_type, "id": resource_id}
        return self._write(resource_type, resource_id, tombstone, current, deleted=True)

    def _put(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        if_match: int | None,
        own_tokens: OwnTokens | None,
        booking: bool = False,
    ) -> Outcome:
        current = self.latest(resource_type, resource_id)
        check_if_match(f"{resource_type}/{resource_id}", current, if_match)
        unchanged = current is not None and not current.deleted and same_content(current, resource)
        if unchanged:
            assert current is not None
            return Outcome(current, created=False, changed=False)
        keep_slots(self, resource_type, resource_id, current, resource, booking)
        return self._write(
            resource_type, resource_id, resource, current, deleted=False, own_tokens=own_tokens
        )

    def write_consequence(
        self, resource_type: str, resource_id: str, resource: dict[str, Any]
    ) -> Outcome:
        """A write Coffre makes as the consequence of a client's (a Slot an appointment
        takes or releases): the rules on clients' writes do not run on it again."""
        current = self.latest(resource_type, resource_id)
        return self._write(resource_type, resource_id, resource, current, deleted=False)

    def _write(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        current: Stored | None,
        *,
        deleted: bool,
        own_tokens: OwnTokens | None = None,
    ) -> Outcome:
        records, keys = self.records, self.records.keys
        loc = keys.location(resource_type, resource_id)
        version = 1 if current is None else current.version + 1
        ts = self._stamp(current)
        if deleted:
            assert current is not None  # only what exists is deleted
            comp = current.comp
            tokens: list[bytes] = []
        else:
            meta = {
                k: v
                for k, v in resource.get("meta", {}).items()
                if k not in ("versionId", "lastUpdated")
            }
            resource["meta"] = {"versionId": str(version), "lastUpdated": instant(ts), **meta}
            comp = records.compartment(resource)
            tokens = write_tokens(keys, resource, own_tokens)
        body = json.canonical(resource)
        data_key = self._key_for_write(comp)
        sealed_body = records.envelope.close(
            data_key, pad(body), version_associated(loc, version, comp, ts, deleted)
        )
        self.written.add(loc)
        self.txn.append(
            SealedVersion(loc, version, keys.kind(resource_type), comp, ts, deleted, sealed_body),
            tokens,
        )
        kind = (
            LeafKind.DELETE if deleted else LeafKind.CREATE if current is None else LeafKind.UPDATE
        )
        digest = hashlib.sha256(sealed_body).digest()
        stored = Stored(resource_type, resource_id, version, ts, deleted, body, loc, digest, comp)
        self._latest[loc] = stored
        leaf = Leaf(kind, loc, version, digest, ts, index_digest(tokens))
        self._pending.append(_Logged(leaf, comp, stored.version_reference))
        return Outcome(stored, created=current is None or current.deleted)

    def _stamp(self, current: Stored | None) -> int:
        """A write's time: now, but never before the vault's newest write, nor at or before
        the record's own latest version. A clock stepped back (NTP, a virtual machine
        restored) must not date a change before what a client already holds: ``_since``,
        If-Modified-Since and the next export would miss it."""
        floor = max(self.records.latest_writes.newest_write, self._newest)
        if current is not None:
            floor = max(floor, current.ts + 1)
        self._newest = max(now_us(), floor)
        return self._newest

    def log_access(self, kind: LeafKind, accessed: Iterable[Stored]) -> None:
        """A leaf for each version a read, search or history hands out."""
        ts = now_us()
        for stored in accessed:
            leaf = Leaf(kind, stored.loc, stored.version, stored.sealed_digest, ts)
            self._pending.append(_Logged(leaf, stored.comp, stored.version_reference))

    def log_integrity_failure(self, reference: str | None) -> None:
        """A leaf saying a request was refused because what the storage returned failed its
        check, about ``reference`` (``Type/id``...) when the request named one. Its
        AuditEvent goes to the gateway's own compartment: the record's may be what the
        host tampered with."""
        parsed = parse_reference(reference) if reference else None
        loc = self.records.keys.location(*parsed) if parsed else NO_DIGEST
        self.log_to_gateway([Leaf(LeafKind.INTEGRITY, loc, 0, NO_DIGEST, now_us())], reference)

    def log_to_gateway(self, leaves: Iterable[Leaf], reference: str | None) -> None:
        """Leaves whose one AuditEvent, naming ``reference``, goes to the gateway's own
        compartment, which survives whatever happens to the records concerned."""
        comp = self.records.keys.shared_compartment("AuditEvent")
        for position, leaf in enumerate(leaves):
            self._pending.append(_Logged(leaf, comp, None if position else reference))
