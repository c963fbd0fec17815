"""Rotating the key-encryption key while the vault serves: ``coffre keys``.

A rotation makes a new key-encryption key (KEK) active in the custody, then rewraps every
compartment's data key from the older KEKs to it, a batch at a time. The data keys do not
change, so neither do the sealed records, nor the keys that running gateways cache.

Each batch is unwrapped and wrapped again outside any transaction, then written in one
short transaction in which each row is replaced only if it still holds the wrapping that
was read (compare-and-set): an erasure or another rotation that touched it meanwhile
wins, and the row is left to it. A rewrap that stops halfway is finished by running it
again: it rewraps whatever the active KEK does not wrap yet.

An old KEK is retired (destroyed in the custody) only inside a write transaction that
finds no data key wrapped by it: every write that makes a data key holds the same write
lock and wraps under the active KEK, which every process looks up before it wraps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from coffre.custody import KeyCustodian, WrappedKey
from coffre.custody.memory import check_retirable
from coffre.exceptions import CustodyError, SealError, VaultStateError
from coffre.ledger.leaf import NO_DIGEST, Leaf, LeafKind
from coffre.service.audit import OPERATOR, Access
from coffre.service.records import RecordStore
from coffre.service.stored import now_us
from coffre.storage.base import StorageTxn

BATCH = 500
"""Data keys rewrapped per transaction: the write lock is held for one batch only."""

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class KekUse:
    """A key-encryption key as ``coffre keys list`` shows it."""

    kek_id: str
    active: bool
    held: bool
    """Whether the custody still holds it (a storage may name a KEK already retired)."""
    data_keys: int


@dataclass(slots=True)
class RewrapReport:
    rewrapped: int = 0
    lost: int = 0
    """Rows that changed between the read and the compare-and-set (erased, or rewrapped
    by another process), left as the other writer made them."""
    dropped: int = 0
    """Rows of compartments the log says Coffre erased: the host put them back (from a
    backup, say), and a rewrap would have made the erased data open under the new KEK."""
    foreign: int = 0
    """Rows whose key is not the one the log recorded for their compartment (moved from
    another, copied under a made-up compartment): deleted, never rewrapped, so that no
    copy of a patient's key outlives their erasure."""


class KeyRotation:
    """The key-encryption keys of an open vault: list, rotate, rewrap, retire."""

    def __init__(self, records: RecordStore) -> None:
        self._records = records
        self._storage = records.storage
        self._custodian: KeyCustodian = records.custodian

    def keks(self) -> list[KekUse]:
        """Every KEK the custody holds or the storage names, oldest first."""
        counts = self._storage.wrapped_key_counts()
        held = self._custodian.kek_ids()
        active = self._custodian.active_kek()
        named = sorted({*held, *counts}, key=_kek_order)
        return [KekUse(kek, kek == active, kek in held, counts.get(kek, 0)) for kek in named]

    def pending(self) -> int:
        """How many data keys a KEK other than the active one wraps."""
        active = self._custodian.active_kek()
        counts = self._storage.wrapped_key_counts()
        return sum(count for kek, count in counts.items() if kek != active)

    def rotate(self) -> tuple[str, str]:
        """Make a new KEK active and log it; (old, new) ids. Refused while a previous
        rotation has data keys left to rewrap."""
        left = self.pending()
        if left:
            raise VaultStateError(
                f"a previous rotation is unfinished: {left} data keys are not wrapped by the"
                " active key-encryption key yet; finish it with 'coffre keys rotate --resume'"
            )
        old = self._custodian.active_kek()
        with self._records.writer() as writer:
            new = self._custodian.add_kek()
            writer.access = _operator(f"key rotation: {new} made active, replacing {old}")
            writer.log_to_gateway([_leaf()], None)
        return old, new

    def retirable(self) -> list[str]:
        """The KEKs the custody holds that no data key in the storage needs any more."""
        return [
            use.kek_id for use in self.keks() if use.held and not use.active and not use.data_keys
        ]

    def rewrap(self, on_progress: Progress = lambda n: None, batch: int = BATCH) -> RewrapReport:
        """Rewrap every data key the active KEK does not wrap, in batches, until a pass
        over the storage finds none."""
        report = RewrapReport()
        while self._rewrap_pass(report, on_progress, batch):
            pass
        return report

    def _rewrap_pass(self, report: RewrapReport, on_progress: Progress, batch: int) -> int:
        """One pass over the storage in compartment order; how many keys it found."""
        active, held = self._custodian.active_kek(), set(self._custodian.kek_ids())
        found, after = 0, b""
        while rows := self._storage.wrapped_keys_besides(active, after, batch):
            found += len(rows)
            after = rows[-1][0]
            erased = self._erased([comp for comp, _, _ in rows])
            rows = [row for row in rows if row[0] not in erased]
            unknown = {kek for _, kek, _ in rows} - held
            if unknown:
                raise CustodyError(
                    f"the storage holds data keys wrapped by {', '.join(sorted(unknown))}, which"
                    " the custody does not hold (retired, or another vault's): they cannot be"
                    " rewrapped"
                )
            fresh = [(row, self._rewrapped(*row)) for row in rows]
            foreign = {comp for (comp, _, _), new in fresh if new is None}
            with self._storage.transaction() as txn:
                for comp in sorted(erased | foreign):
                    txn.erase_compartment(comp, ())
                for (comp, kek, wrapped), new in fresh:
                    if new is None:
                        continue
                    if txn.rewrap_key(comp, (kek, wrapped), (new.kek_id, new.wrapped)):
                        report.rewrapped += 1
                    else:
                        report.lost += 1
            report.dropped += len(erased)
            report.foreign += len(foreign)
            on_progress(len(rows) + len(erased))
        return found

    def _erased(self, comps: list[bytes]) -> set[bytes]:
        """Those of ``comps`` that the log, followed to its end, says Coffre erased."""
        latest = self._records.latest_writes
        latest.catch_up(self._storage)
        return {comp for comp in comps if latest.erased_at(comp) is not None}

    def _rewrapped(self, comp: bytes, kek_id: str, wrapped: bytes) -> WrappedKey | None:
        """The data key wrapped by the active KEK; None for a key that is not the
        compartment's own as the log recorded it (moved, copied or planted by the host)."""
        try:
            key = self._records.opened_key(comp, (kek_id, wrapped))
        except SealError:
            return None
        assert key is not None
        return self._custodian.wrap(key)

    def retire(self, kek_id: str) -> None:
        """Log, then destroy, an old KEK in the custody; refused while a data key in the
        storage is wrapped by it. The log first: a retirement that stops in between (a
        crash, a storage gone) leaves a logged retirement and a key that running it again
        destroys, never a key destroyed that the log does not know of."""
        check_retirable(kek_id, self._custodian.kek_ids(), self._custodian.active_kek())
        with self._records.writer(_operator(f"key retirement: {kek_id} destroyed")) as writer:
            _check_unused(writer.txn, kek_id)
            writer.log_to_gateway([_leaf()], None)
        with self._storage.transaction() as txn:
            _check_unused(txn, kek_id)  # under the write lock: no data key wrapped by it since
            self._custodian.retire_kek(kek_id)


def _check_unused(txn: StorageTxn, kek_id: str) -> None:
    left = txn.wrapped_key_counts().get(kek_id, 0)
    if left:
        raise VaultStateError(
            f"{left} data keys are still wrapped by {kek_id}: it cannot be retired"
            " before 'coffre keys rotate --resume' rewraps them"
        )


def _operator(reason: str) -> Access:
    return Access(OPERATOR.who, reason=reason)


def _leaf() -> Leaf:
    return Leaf(LeafKind.KEY_ROTATION, NO_DIGEST, 0, NO_DIGEST, now_us())


def _kek_order(kek_id: str) -> tuple[str, int]:
    """``kek-10`` after ``kek-9``."""
    prefix, _, number = kek_id.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (kek_id, -1)
