"""Search over sealed records: blind look-ups on the host (``indexing``'s tokens), then
the exact test after decryption, so that a false hit of a truncated token never reaches a
client."""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable, Collection, Container, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from coffre.exceptions import FhirError, SealError
from coffre.fhir._definitions_r4 import PATIENT_COMPARTMENT_PATHS, RESOURCE_TYPES
from coffre.seal import PurposeKeys
from coffre.search.criteria import Criterion, criterion, parameter_of
from coffre.search.extract import index_values
from coffre.search.matching import check_values, criterion_match, sort_key
from coffre.search.naming import names_patients, record_patients
from coffre.search.parameters import parameters_for
from coffre.search.plan import Plan, plan
from coffre.search.values import Ref, Value
from coffre.service.candidates import PAGE_MAX, Batch, Lookup, batches
from coffre.service.indexing import blind
from coffre.storage.base import HistoryQuery, SealedVersion, StorageReader

if TYPE_CHECKING:
    from coffre.service.records import RecordStore
    from coffre.service.stored import KeySource, Stored

# A candidate turned away has the tokens of this many of its batch read with its own: a
# truncated token shared with a frequent value can make most of a page false hits.
READ_AHEAD = 64
# Chained and reverse-chained criteria become lists of ids; past this many, they are refused.
MAX_CHAIN_IDS = 10_000


@lru_cache(maxsize=1024)
def _kind(keys: PurposeKeys, resource_type: str) -> bytes:
    return keys.kind(resource_type)


# Queries look up the same keys again and again (an open date range is some 120 of them):
# the tokens of a plan this short are kept (a resolved chain's can run to thousands).
CACHED_PLAN_MAX = 256


def _planned_lookup(keys: PurposeKeys, resource_type: str, parameter: str, found: Plan) -> Lookup:
    return Lookup(
        tuple(
            frozenset(blind(keys, resource_type, parameter, key) for key in conjunction)
            for conjunction in found
        )
    )


_cached_lookup = lru_cache(maxsize=4096)(_planned_lookup)


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a search looks: the committed storage, or a write transaction's view of it.

    ``as_of`` pins a storage sequence number: a resource written after it is taken as it
    was then (paging links stay valid while data changes). ``base`` normalises the query's
    absolute references only: resources are indexed without it (the storage must not
    depend on the URL a gateway is reached at). ``written``: what the transaction wrote.
    ``admit``: which opened resources the search may use at all (the requester's
    authorisation), matches, includes, chains and ``_has`` alike. ``within``: a patient
    whose compartment holds every resource of a compartment type the search may use, so
    that only its candidates are opened (``admit`` still decides).
    """

    reader: StorageReader
    key_of: KeySource | None = None
    written: AbstractSet[bytes] = frozenset()
    base: str | None = None
    as_of: int | None = None
    admit: Callable[[Stored], bool] | None = None
    within: str | None = None


class Searcher:
    """Runs criteria on one resource type over a scope."""

    def __init__(self, records: RecordStore, scope: Scope) -> None:
        self.records = records
        self.scope = scope
        self._committed = scope.reader is records.storage
        self._verify = records.verify_reads
        # Candidates found by look-up whose index tokens were not read: checked against the
        # log only if the search turns them away (see _turned_away), with the tokens of the
        # next few of the batch being read, read ahead.
        self._unchecked: set[bytes] = set()
        self._batch: list[bytes] = []
        self._read_ahead: dict[bytes, bytes] = {}
        self._chains: dict[tuple[str, Criterion], Criterion] = {}

    # -- candidates ---------------------------------------------------------------------

    def _lookup(self, resource_type: str, parameter: str, found: Plan) -> Lookup:
        lookup = _cached_lookup if len(found) <= CACHED_PLAN_MAX else _planned_lookup
        return lookup(self.records.keys, resource_type, parameter, found)

    def _lookups(self, resource_type: str, criteria: tuple[Criterion, ...]) -> list[Lookup]:
        """What the criteria look up (none when no criterion can be: a scan), and the
        scope's patient compartment when the search is confined to it."""
        lookups: list[Lookup] = []
        for found in criteria:
            param = parameter_of(resource_type, found.parameter)
            assert param is not None
            if found.parameter == "_id" and found.modifier is None:
                keys = self.records.keys
                lookups.append(
                    Lookup(locs=frozenset(keys.location(resource_type, v) for v in found.values))
                )
                continue
            planned = plan(param, found, self.scope.base)
            if planned is not None:
                lookups.append(self._lookup(resource_type, found.parameter, planned))
        patient = self.scope.within
        if patient is not None and resource_type in compartment_types():
            lookups.append(self._compartment_lookup(resource_type, patient))
        return lookups

    def _batches(
        self, resource_type: str, lookups: list[Lookup], first_page: int | None
    ) -> Iterator[tuple[Batch, dict[bytes, SealedVersion] | None]]:
        """Candidates a batch at a time, with their versions when already read (a scan:
        every current record of the type, when nothing can be looked up)."""
        if lookups:
            for batch in batches(self.scope.reader, lookups, first_page):
                yield batch, None
            return
        records = self.records
        rows: dict[bytes, SealedVersion | None] = {
            r.loc: r for r in records.storage.current_of_kind(records.keys.kind(resource_type))
        }
        if not self._committed:
            rows.update(dict.fromkeys(self.scope.written - rows.keys()))
        ordered = sorted(rows)
        for start in range(0, len(ordered), PAGE_MAX):
            locs = ordered[start : start + PAGE_MAX]
            known = {loc: row for loc in locs if (row := rows[loc]) is not None}
            yield Batch(locs), known if self._committed else None

    def _rows(
        self, resource_type: str, lookups: list[Lookup], first_page: int | None = None
    ) -> Iterator[SealedVersion]:
        """Current versions of the candidates, in location order (stable while data
        changes), each confirmed by the log, but those the scope's write transaction wrote.
        Lazy: a page stops reading once it is full (``first_page``: how many candidates
        it expects to need, if it knows). A look-up of the index that finds nothing is
        answered once the index is known to find what it holds (``IndexCheck``)."""
        if self._committed:
            self.records.latest_writes.catch_up(self.records.storage)
        indexed = self._verify and any(lookup.locs is None for lookup in lookups)
        if indexed:
            self.records.index_check.vouch(found_nothing=False)
        found = False
        for batch, known in self._batches(resource_type, lookups, first_page):
            found = True
            versions = known if known is not None else self.scope.reader.latest_each(batch.locs)
            self._batch = batch.locs
            for loc in batch.locs:
                sealed = versions.get(loc)
                verify = self._verify and loc not in self.scope.written
                if verify and not self._confirmed(loc, sealed, batch.tokens):
                    sealed = self._checked_again(loc)
                elif verify and lookups and batch.tokens is None:
                    self._unchecked.add(loc)
                if sealed is not None:
                    yield sealed
        if indexed and not found:
            self.records.index_check.vouch(found_nothing=True)

    def _confirmed(
        self, loc: bytes, sealed: SealedVersion | None, tokens: dict[bytes, bytes] | None
    ) -> bool:
        """Whether the log confirms a candidate's version, and its index tokens when the
        look-up read them (``tokens``, joined per location)."""
        records = self.records
        if tokens is None or sealed is None:
            return records.is_logged_version(loc, sealed)
        return records.is_logged_latest(loc, sealed, self.scope.reader, tokens.get(loc, b""))

    def _turned_away(self, loc: bytes) -> None:
        """Check against the log the index tokens of a candidate the look-ups found but
        whose decrypted resource does not match: a token the host added or moved shows as
        such a false hit, while one it added to a record that matches anyway changes no
        answer. A record whose tokens fail is read again (a write may just have changed
        it), which raises SealError if they still do not match the log."""
        if loc not in self._unchecked:
            return
        if loc not in self._read_ahead:
            start = bisect_right(self._batch, loc)
            after = self._batch[start : start + READ_AHEAD - 1]
            ahead = [loc, *(x for x in after if x in self._unchecked)]
            self._read_ahead = dict.fromkeys(ahead, b"") | self.scope.reader.joined_tokens(ahead)
        self._unchecked.discard(loc)
        digest = hashlib.sha256(self._read_ahead.pop(loc)).digest()
        if not self.records.has_logged_tokens(loc, digest):
            self._checked_again(loc)

    def _checked_again(self, loc: bytes) -> SealedVersion | None:
        """A candidate the log does not confirm, looked up once more in the committed
        storage (a write may have committed meanwhile); SealError if it still fails. A
        write transaction holds the write lock, so nothing changed there: SealError."""
        if not self._committed:
            raise SealError()
        return self.records.checked_latest(loc)

    def _as_of(self, sealed: SealedVersion) -> SealedVersion | None:
        as_of = self.scope.as_of
        if as_of is None or sealed.seq <= as_of:
            return sealed
        older = self.records.storage.history(
            HistoryQuery(loc=sealed.loc, before_seq=as_of, limit=1)
        )
        return older[0] if older else None

    # -- the search -----------------------------------------------------------------------

    def find(self, resource_type: str, criteria: tuple[Criterion, ...]) -> list[Stored]:
        """Every current resource of a type meeting every criterion, in location order."""
        return self.search(resource_type, criteria)[0]

    def search(
        self,
        resource_type: str,
        criteria: tuple[Criterion, ...],
        limit: int | None = None,
        admit: Callable[[Stored], bool] | None = None,
    ) -> tuple[list[Stored], bool]:
        """Matches in location order, and whether they are all of them. With ``limit``,
        reading stops at that many matches (the rest is neither read nor decrypted): they
        are all of them only if no candidate is left. ``admit``: which matches the search
        may use, instead of the scope's (which still decides of its chains and ``_has``)."""
        for found in criteria:
            check_values(resource_type, found)
        criteria = self.resolve(resource_type, criteria)
        if any(not c.values for c in criteria):
            return [], True
        lookups = self._lookups(resource_type, criteria)
        results: list[Stored] = []
        # One candidate past the limit tells whether any is left.
        rows = self._rows(resource_type, lookups, None if limit is None else limit + 1)
        for stored in self._opened((resource_type,), rows, admit or self.scope.admit):
            if not self.matches(stored, criteria):
                self._turned_away(stored.loc)
                continue
            results.append(stored)
            if limit is not None and len(results) >= limit:
                return results, next(rows, None) is None
        return results, True

    def _opened(
        self,
        resource_types: Container[str],
        rows: Iterator[SealedVersion],
        admit: Callable[[Stored], bool] | None,
    ) -> Iterator[Stored]:
        """The candidates of these types opened, as of the scope's snapshot, deletions and
        erased patients' records left out, and those ``admit`` refuses. A record deleted
        since the snapshot is left out too (search.md, Paging): its version of then would
        hand out, to whoever may search, what a read answers 410 for."""
        for row in rows:
            sealed = None if row.deleted else self._as_of(row)
            if sealed is None or sealed.deleted or self.records.is_erased(sealed.comp):
                self._turned_away(row.loc)
                continue
            stored = self.records.open_found(sealed, self.scope.key_of)
            if stored.resource_type not in resource_types:
                self._turned_away(row.loc)
            elif admit is None or admit(stored):
                yield stored

    def compartment(
        self, resource_types: Collection[str], patient_id: str, needed: int | None = None
    ) -> Iterator[Stored]:
        """Current resources of these types that are the patient's records, in location
        order, read as they are asked for (``needed``: how many the caller expects to take,
        if it knows): those any reference parameter that may name a Patient finds, kept
        when the compartment rule puts them in this patient's compartment or, for a type
        outside it, when they name this patient (``record_patients``). Only the types the
        storage holds records of are looked up (a vault holds a few of the sixty-odd)."""
        conjunctions = tuple(
            conjunction
            for resource_type in self.present(resource_types)
            for conjunction in self._compartment_lookup(resource_type, patient_id).conjunctions
        )
        rows = self._rows("", [Lookup(conjunctions)], needed)
        for stored in self._opened(resource_types, rows, self.scope.admit):
            if patient_id in record_patients(stored.resource()):
                yield stored
            else:
                self._turned_away(stored.loc)

    def present(self, resource_types: Collection[str]) -> list[str]:
        """Those of the types some current record is of."""
        kinds = {t: _kind(self.records.keys, t) for t in resource_types}
        present = self.scope.reader.kinds_present(list(kinds.values()))
        return [t for t, kind in kinds.items() if kind in present]

    def _compartment_lookup(self, resource_type: str, patient_id: str) -> Lookup:
        """The records of a type any reference parameter that may name a Patient finds
        naming this one: a superset of the type's part of the patient's compartment."""
        if resource_type == "Patient":
            return Lookup(locs=frozenset({self.records.keys.location("Patient", patient_id)}))
        reference = Criterion("", (f"Patient/{patient_id}",))
        conjunctions: list[frozenset[bytes]] = []
        for code in patient_references(resource_type):
            param = parameter_of(resource_type, code)
            planned = None if param is None else plan(param, reference)
            conjunctions += self._lookup(resource_type, code, planned or ()).conjunctions
        return Lookup(tuple(conjunctions))

    def matches(self, stored: Stored, criteria: tuple[Criterion, ...]) -> bool:
        """Whether an opened resource meets every criterion (resolved: no chain, no
        ``_has``): the exact test, on the decrypted resource, that turns false hits away."""
        names = frozenset(c.parameter for c in criteria)
        precise = reads_numbers(stored.resource_type, names)
        values = index_values(stored.resource(precise), None, names)
        return all(self._match(stored.resource_type, c, values) for c in criteria)

    def _match(self, resource_type: str, found: Criterion, values: dict[str, list[Value]]) -> bool:
        param = parameter_of(resource_type, found.parameter)
        assert param is not None
        return criterion_match(param, found, values.get(found.parameter), self.scope.base)

    # -- chains ---------------------------------------------------------------------------

    def resolve(self, resource_type: str, criteria: tuple[Criterion, ...]) -> tuple[Criterion, ...]:
        """Chained and ``_has`` criteria as plain ones on references and ids, each resolved
        once per type: the links of ``subject.subject.name`` over a Task's 145 target types
        ask for the same inner searches again and again."""
        resolved = []
        for found in criteria:
            key = (resource_type, found)
            if key not in self._chains:
                self._chains[key] = self._resolve_one(resource_type, found)
            resolved.append(self._chains[key])
        return tuple(resolved)

    def _resolve_one(self, resource_type: str, found: Criterion) -> Criterion:
        if found.has is not None:
            target, reference = found.has
            assert found.chain is not None
            inner = criterion(found.chain, ",".join(_escape(v) for v in found.values))
            ids: dict[str, None] = {}
            for stored in self.find(target, (inner,)):
                values = index_values(stored.resource(), None, frozenset({reference}))
                for value in values.get(reference, ()):
                    if type(value) is Ref and value.type == resource_type and value.local_id:
                        ids[value.local_id] = None
            return Criterion("_id", _bounded(ids))
        if found.chain is None:
            return found
        param = parameter_of(resource_type, found.parameter)
        assert param is not None
        inner = criterion(found.chain, ",".join(_escape(v) for v in found.values))
        refs: dict[str, None] = {}
        for target in (found.modifier,) if found.modifier else param.targets:
            if parameter_of(target, inner.parameter) is None and inner.has is None:
                continue
            refs.update(dict.fromkeys(f"{target}/{s.id}" for s in self.find(target, (inner,))))
        return Criterion(found.parameter, _bounded(refs))


def _escape(value: str) -> str:
    return value.replace(",", "\\,")


def _bounded(found: dict[str, None]) -> tuple[str, ...]:
    if len(found) > MAX_CHAIN_IDS:
        raise FhirError(
            400,
            "too-costly",
            f"a chained criterion matches more than {MAX_CHAIN_IDS} resources: narrow it",
        )
    return tuple(found)


def sort_results(
    resource_type: str, results: list[Stored], keys: list[str], base: str | None
) -> list[Stored]:
    """Results ordered by ``_sort`` keys (``-`` descending); a resource without a value
    sorts last either way."""
    ordered = list(results)
    names = frozenset(k.removeprefix("-") for k in keys)
    for name in names:
        if parameter_of(resource_type, name) is None:
            raise FhirError(400, "not-supported", f"{resource_type} cannot be sorted by {name!r}")
    precise = reads_numbers(resource_type, names)
    values = {id(s): index_values(s.resource(precise), base, names) for s in ordered}
    for key in reversed(keys):
        name, descending = key.removeprefix("-"), key.startswith("-")
        pick: Callable[[list[Any]], Any] = max if descending else min

        def order(stored: Stored, name: str = name, pick: Callable[[list[Any]], Any] = pick) -> Any:
            found = [k for v in values[id(stored)].get(name, ()) if (k := sort_key(v)) is not None]
            return pick(found) if found else None

        present = [s for s in ordered if order(s) is not None]
        absent = [s for s in ordered if order(s) is None]
        present.sort(key=order, reverse=descending)
        ordered = present + absent
    return ordered


@lru_cache(maxsize=1024)
def reads_numbers(resource_type: str, names: frozenset[str]) -> bool:
    """Whether some of these parameters compare numbers, which the resource must then be
    read with as written (``1.50`` stands for [1.495, 1.505), ``1.5`` for [1.45, 1.55)),
    as they were indexed; other searches spare the scan for them."""
    return any(
        param is not None and param.type in ("number", "quantity", "composite")
        for param in map(partial(parameter_of, resource_type), names)
    )


def compartment_types() -> tuple[str, ...]:
    """The resource types that can be in a patient's compartment, Patient first."""
    return ("Patient", *sorted(t for t in PATIENT_COMPARTMENT_PATHS if t != "Patient"))


@lru_cache(maxsize=1)
def everything_types() -> tuple[str, ...]:
    """The resource types ``Patient/$everything`` hands out as a patient's records,
    Patient first: those of the compartment, and those outside it whose records name
    patients by a search parameter (a Task for them, a Device of theirs). A Binary
    names its patient by its ``securityContext``, which no search parameter indexes:
    it is not looked for."""
    named = (t for t in RESOURCE_TYPES if names_patients(t) and patient_references(t))
    return ("Patient", *sorted({*PATIENT_COMPARTMENT_PATHS, *named} - {"Patient"}))


@lru_cache(maxsize=256)
def patient_references(resource_type: str) -> tuple[str, ...]:
    """The reference parameters of a type that may point at a Patient."""
    return tuple(
        code
        for code, param in parameters_for(resource_type).items()
        if param.type == "reference" and param.extract is not None and "Patient" in param.targets
    )


def everything(
    searcher: Searcher, patient_id: str, types: Collection[str], needed: int | None = None
) -> Iterator[Stored]:
    """The patient's records (``Patient/$everything``) of ``types``, read as they are
    asked for (``needed``: how many the caller expects to take, if it knows): the Patient
    first, then the others in location order."""
    if "Patient" in types:
        yield from searcher.find("Patient", (Criterion("_id", (patient_id,)),))
    others = [t for t in types if t != "Patient" and t in everything_types()]
    yield from searcher.compartment(others, patient_id, needed)
