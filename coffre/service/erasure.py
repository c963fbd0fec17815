"""Erasing a patient (GDPR art. 17, Quebec's Law 25) by crypto-shredding.

Every record of a patient's compartment, and every AuditEvent of their access history,
is sealed under the compartment's one data key. Erasure removes that key's wrapped copy
from the storage, the only one there is: what remains (the storage, the key-encryption
keys, the root secret) can no longer open any of it. The sealed bodies stay where they
are, as undecryptable bytes that the log's leaves still commit to, so the log verifies
as before.

The erasure is itself written to the log, in one transaction with the key's removal:

- an ``ERASE`` leaf of version 0 whose location is the compartment token says that
  Coffre erased the compartment, and when; every gateway that follows the log then
  answers 410 Gone for anything sealed in it, and drops the data key it may have cached;
- an ``ERASE`` leaf per record whose latest version is in the compartment becomes that
  record's latest write in the map: same version and sealed bytes, no index tokens (they
  are deleted with the key), so the record still checks against the log;
- one AuditEvent, in the gateway's own compartment (which survives), says who erased
  whom and why.

The Slots held by the Appointments sealed in the compartment are freed first, in the same
transaction: once those Appointments are unreadable, nothing would ever let their seats go.
An Appointment naming other patients too is sealed under its type's shared key: it stays
readable, and keeps its seats.

A host that deletes a wrapped key on its own writes no such leaf (only the gateway can
tag one): the records it cuts off still fail their integrity check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from coffre.exceptions import FhirError
from coffre.ledger.leaf import NO_DIGEST, NO_TOKENS, Leaf, LeafKind
from coffre.service.audit import Access
from coffre.service.records import RecordStore
from coffre.service.slots import release_held_by
from coffre.service.stored import check_id, erased, instant, now_us
from coffre.service.writer import Writer


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure did: how many records it cut off, when, and how many of the
    patient's records the storage altered (left as they are: see ``erase_patient``)."""

    patient: str
    records: int
    ts: int
    tampered: int = 0

    @property
    def when(self) -> str:
        return instant(self.ts)


def erase_patient(records: RecordStore, patient_id: str, access: Access) -> Erasure:
    """Destroy a patient's data key and log it as ``access``'s erasure; 404 when nothing
    was ever sealed in their compartment, 410 when Coffre already erased them. The caller
    then runs ``storage.purge_erased()``, which may have to wait for readers.

    A host cannot block an erasure by hiding the key or altering a record: the log's
    record of the key says the patient exists, and a record whose latest version the log
    does not confirm gets no ``ERASE`` leaf and keeps its tokens (it fails its integrity
    check until the host puts it back, and then answers 410 like the others)."""
    check_id("Patient", patient_id)
    comp = records.keys.patient_compartment(patient_id)
    with records.writer(access) as writer:
        when = records.latest_writes.erased_at(comp)
        if when is not None:
            raise erased(when)
        if writer.txn.wrapped_key(comp) is None and not records.latest_writes.key_binding(comp):
            raise FhirError(  # not even records naming them
                404, "not-found", f"Patient/{patient_id} does not exist: there is nothing to erase"
            )
        release_held_by(writer, patient_id, comp)
        ts = now_us()
        leaves, tampered = _record_leaves(records, writer, comp, ts)
        writer.txn.erase_compartment(comp, [leaf.loc for leaf in leaves])
        marker = Leaf(LeafKind.ERASE, comp, 0, NO_DIGEST, ts)
        writer.log_to_gateway([marker, *leaves], f"Patient/{patient_id}")
    records.forget_key(comp)
    return Erasure(patient_id, len(leaves), ts, tampered)


def _record_leaves(
    records: RecordStore, writer: Writer, comp: bytes, ts: int
) -> tuple[list[Leaf], int]:
    """An ``ERASE`` leaf for each record whose latest version is in the compartment, once
    the log confirms that version (the host chooses which records it lists, not what they
    are), and how many records listed the log did not confirm."""
    txn = writer.txn
    leaves, tampered = [], 0
    for loc in sorted(txn.records_of(comp)):
        sealed = txn.latest(loc)
        if sealed is None or sealed.comp != comp or not records.is_logged_latest(loc, sealed, txn):
            tampered += 1
            continue
        body_hash = hashlib.sha256(sealed.body).digest()
        leaves.append(Leaf(LeafKind.ERASE, loc, sealed.version, body_hash, ts, NO_TOKENS))
    return leaves, tampered
