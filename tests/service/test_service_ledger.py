"""The log on the write path: leaves, checkpoints, proofs, and a storage put back."""

from __future__ import annotations

import hashlib
import logging
from typing import cast

import pytest
from pg import HostDatabase, copy_storage
from softhsm import BOTH_CUSTODIES

from coffre.exceptions import SealError, VaultStateError
from coffre.ledger import (
    LedgerError,
    SignatureError,
    inclusion_proof,
    open_checkpoint,
    subtree_from_nodes,
    verify_inclusion,
    verify_map_proof,
)
from coffre.ledger import checkpoint as checkpoint_module
from coffre.ledger.hashing import leaf_hash, merkle_root, node_hash
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.search import parse_criteria
from coffre.service import RecordStore, Vault
from coffre.service import ledger as ledger_module
from coffre.service.ledger import LatestWrites, stored_node
from coffre.service.vault import BENCHMARK_FILE
from coffre.storage.base import StorageReader


def _write_some(records: RecordStore, count: int) -> None:
    for number in range(count):
        with records.writer() as writer:
            writer.update("Patient", f"p{number}", {"resourceType": "Patient", "id": f"p{number}"})
    with records.writer() as writer:
        writer.update("Patient", "p0", {"resourceType": "Patient", "id": "p0", "gender": "female"})
        writer.delete("Patient", "p1")


def test_every_write_is_a_leaf_bound_to_its_sealed_bytes(
    vault: Vault, records: RecordStore
) -> None:
    _write_some(records, 3)
    logged = map(Leaf.decode, records.storage.leaves(0, records.storage.leaf_count()))
    leaves = [leaf for leaf in logged if leaf.kind is not LeafKind.DATA_KEY]
    assert [leaf.kind for leaf in leaves] == [LeafKind.CREATE] * 3 + [
        LeafKind.UPDATE,
        LeafKind.DELETE,
    ]
    db = HostDatabase.of(vault)
    sealed = db.execute("SELECT body FROM versions ORDER BY seq").fetchall()
    assert [leaf.body_hash for leaf in leaves] == [
        hashlib.sha256(row[0]).digest() for row in sealed
    ]


@BOTH_CUSTODIES
def test_the_checkpoint_signs_the_root_of_all_leaves(vault: Vault, records: RecordStore) -> None:
    _write_some(records, 6)
    checkpoint = records.ledger.latest(records.storage)
    size = 8 + 6  # the writes, and a leaf for each of the 6 patients' data keys
    assert checkpoint is not None and checkpoint.size == records.storage.leaf_count() == size
    expected = merkle_root([leaf_hash(data) for data in records.storage.leaves(0, size)])
    assert checkpoint.root == expected
    remembered = open_checkpoint(vault.checkpoint_memory.read_text(), records.ledger.verifier_key)
    assert remembered == checkpoint


def _check_inclusion_proofs(records: RecordStore) -> None:
    checkpoint = records.ledger.latest(records.storage)
    assert checkpoint is not None
    subtree = subtree_from_nodes(stored_node(records.storage))
    for index, data in enumerate(records.storage.leaves(0, checkpoint.size)):
        proof = inclusion_proof(index, checkpoint.size, subtree)
        verify_inclusion(leaf_hash(data), index, checkpoint.size, proof, checkpoint.root)


def test_inclusion_proofs_from_the_stored_tree_verify(records: RecordStore) -> None:
    _write_some(records, 9)
    _check_inclusion_proofs(records)


def test_the_tree_keeps_every_fourth_level_and_a_vault_that_keeps_all_still_proves(
    vault: Vault, records: RecordStore
) -> None:
    """Leaf hashes follow from the leaves, and the levels between from those below; vaults
    written before 2026-12-03 store every level of the tree, which still proves."""
    _write_some(records, 20)
    leaves = [leaf_hash(data) for data in records.storage.leaves(0, records.storage.leaf_count())]
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    with HostDatabase.of(vault) as db:
        held = db.execute("SELECT level, idx, hash FROM tree_nodes ORDER BY level, idx").fetchall()
        kept = [(4, index, hashed) for index, hashed in enumerate(levels[4])]
        assert [(level, index, bytes(h)) for level, index, h in held] == kept
        for level, hashes in enumerate(levels[:4]):
            for index, hashed in enumerate(hashes):
                db.execute(
                    "INSERT INTO tree_nodes (level, idx, hash) VALUES (?, ?, ?)",
                    (level, index, hashed),
                )
    reopened = vault.open()
    _check_inclusion_proofs(reopened)
    with reopened.writer() as writer:
        writer.update("Patient", "p20", {"resourceType": "Patient", "id": "p20"})
    _check_inclusion_proofs(reopened)


@BOTH_CUSTODIES
def test_a_storage_put_back_to_an_older_copy_is_refused(vault: Vault, records: RecordStore) -> None:
    _write_some(records, 2)
    records.storage.close()
    older = vault.folder / "older-copy"
    older.mkdir()
    copy_storage(vault, older)
    records = vault.open()
    _write_some(records, 3)
    records.storage.close()
    copy_storage(Vault.at(older), vault.folder)
    with pytest.raises(VaultStateError, match="rolled back"):
        vault.open()


def test_a_saved_write_stands_when_the_checkpoint_memory_cannot_be_kept(
    vault: Vault, records: RecordStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The memory is written after the commit: a full disk or a read-only folder there must
    not answer a saved write as failed (a client would repeat it), nor leave files."""
    _write_some(records, 1)
    memory = vault.checkpoint_memory
    memory.unlink()
    memory.mkdir()  # the file cannot be replaced, as on a full disk
    with caplog.at_level(logging.WARNING, logger="coffre.ledger"):
        for number in range(2):
            with records.writer() as writer:
                writer.update(
                    "Patient", f"q{number}", {"resourceType": "Patient", "id": f"q{number}"}
                )
        assert records.read("Patient", "q1").version == 1
        said = [record.getMessage() for record in caplog.records if record.name == "coffre.ledger"]
        assert len(said) == 1 and "could not be kept" in said[0], said
        assert not [path for path in memory.parent.iterdir() if path.suffix == ".tmp"]
        memory.rmdir()
        _write_some(records, 1)
        assert "kept up to date again" in caplog.records[-1].getMessage()
    assert memory.read_text() == records.storage.latest_checkpoint()


def test_a_forged_checkpoint_in_the_storage_is_refused(vault: Vault, records: RecordStore) -> None:
    _write_some(records, 2)
    db = HostDatabase.of(vault)
    db.execute("UPDATE checkpoints SET note = replace(note, substr(note, 1, 5), 'forge')")
    db.commit()
    with pytest.raises(SignatureError):
        vault.open()


def test_a_leaf_the_host_adds_is_never_signed(vault: Vault, records: RecordStore) -> None:
    _write_some(records, 1)
    forged = Leaf(LeafKind.UPDATE, records.keys.location("Patient", "p0"), 9, bytes(32), 1).encode()
    db = HostDatabase.of(vault)
    db.execute(
        "INSERT INTO leaves (idx, data) VALUES (?, ?)",
        (records.storage.leaf_count(), forged + bytes(16)),
    )
    db.commit()
    size_before = records.ledger.latest(records.storage).size  # type: ignore[union-attr]
    with (
        pytest.raises(LedgerError, match="not written by this gateway"),
        records.writer() as writer,
    ):
        writer.update("Patient", "p9", {"resourceType": "Patient", "id": "p9"})
    assert records.ledger.latest(records.storage).size == size_before  # type: ignore[union-attr]


def _put_back_version_one(vault: Vault, records: RecordStore, patient_id: str) -> None:
    loc = records.keys.location("Patient", patient_id)
    db = HostDatabase.of(vault)
    db.execute("DELETE FROM versions WHERE loc = ? AND version > 1", (loc,))
    db.execute("UPDATE current SET version = 1 WHERE loc = ?", (loc,))
    db.commit()


def test_an_older_version_put_back_is_caught_by_the_next_read(
    vault: Vault, records: RecordStore
) -> None:
    _write_some(records, 3)  # p0 has two versions
    _put_back_version_one(vault, records, "p0")
    with pytest.raises(SealError):
        records.read("Patient", "p0")
    assert records.read("Patient", "p2").version == 1  # the others are still served


def test_a_record_the_host_drops_is_caught_not_answered_404(
    vault: Vault, records: RecordStore
) -> None:
    _write_some(records, 3)
    loc = records.keys.location("Patient", "p2")
    db = HostDatabase.of(vault)
    db.execute("DELETE FROM versions WHERE loc = ?", (loc,))
    db.commit()
    with pytest.raises(SealError):
        records.read("Patient", "p2")


def test_a_rollback_is_caught_by_a_gateway_started_afterwards(
    vault: Vault, records: RecordStore
) -> None:
    _write_some(records, 2)
    records.storage.close()
    reopened = vault.open()
    _put_back_version_one(vault, reopened, "p0")
    with pytest.raises(SealError):
        vault.open().read("Patient", "p0")


def test_a_search_does_not_return_a_version_put_back(vault: Vault, records: RecordStore) -> None:
    with records.writer() as writer:
        writer.update(
            "Patient",
            "s1",
            {
                "resourceType": "Patient",
                "id": "s1",
                "identifier": [{"system": "urn:s", "value": "1"}],
            },
        )
    with records.writer() as writer:
        writer.update(
            "Patient",
            "s1",
            {
                "resourceType": "Patient",
                "id": "s1",
                "identifier": [{"system": "urn:s", "value": "1"}],
                "gender": "male",
            },
        )
    _put_back_version_one(vault, records, "s1")
    with pytest.raises(SealError):
        records.find("Patient", parse_criteria("identifier=urn:s|1"))


def test_the_checkpoint_signs_a_map_of_each_records_latest_write(records: RecordStore) -> None:
    _write_some(records, 4)
    checkpoint = records.ledger.latest(records.storage)
    assert checkpoint is not None and checkpoint.map_root is not None
    records.latest_writes.catch_up(records.storage)
    latest: dict[bytes, bytes] = {}
    for data in records.storage.leaves(0, checkpoint.size):
        leaf = Leaf.decode(data)
        if leaf.kind in (LeafKind.CREATE, LeafKind.UPDATE, LeafKind.DELETE):
            latest[leaf.loc] = leaf_hash(data)
    for loc, value in latest.items():
        verify_map_proof(checkpoint.map_root, loc, value, records.latest_writes.map.prove(loc))
    absent = records.keys.location("Patient", "never-written")
    verify_map_proof(checkpoint.map_root, absent, None, records.latest_writes.map.prove(absent))


def test_a_vault_signed_with_the_binary_maps_line_opens_and_signs_the_new_one(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checkpoints signed before the map had 16 children a node carry ``map <root>``: the
    # vault opens, and its next write signs ``map16 <root>`` of every record written.
    with monkeypatch.context() as older:
        older.setattr(checkpoint_module, "MAP_PREFIX", "map ")
        records = vault.open()
        _write_some(records, 3)
        records.storage.close()
    records = vault.open()
    last = records.ledger.latest(records.storage)
    assert last is not None and last.map_root is None
    assert any(line.startswith("map ") for line in last.extensions)
    with records.writer() as writer:
        writer.update("Patient", "p9", {"resourceType": "Patient", "id": "p9"})
    checkpoint = records.ledger.latest(records.storage)
    assert checkpoint is not None and checkpoint.map_root is not None
    for number in (0, 2, 9):
        loc = records.keys.location("Patient", f"p{number}")
        value = records.latest_writes.map.get(loc)
        assert value is not None
        verify_map_proof(checkpoint.map_root, loc, value, records.latest_writes.map.prove(loc))
    records.storage.close()


def _observation_of(patient_id: str, number: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"o{number}",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


class _Spans:
    """A storage reader that notes the spans of leaves asked of it."""

    def __init__(self, reader: StorageReader) -> None:
        self._reader = reader
        self.spans: list[tuple[int, int]] = []

    def leaf_count(self) -> int:
        return self._reader.leaf_count()

    def leaves(self, start: int, end: int) -> list[bytes]:
        self.spans.append((start, end))
        return self._reader.leaves(start, end)


def test_the_log_is_followed_a_chunk_at_a_time(
    vault: Vault, records: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a vault follows its whole log: never read at once, whatever its length. An
    AuditEvent whose leaves fall on both sides of a chunk's end counts once."""
    _write_some(records, 6)  # 8 writes, and 6 patients' data keys: leaves 0 to 13
    with records.writer() as writer:  # leaves 14 to 17, of one event: a chunk ends at 15
        for number in range(4):
            writer.update("Observation", f"o{number}", _observation_of("p0", number))
    monkeypatch.setattr(ledger_module, "FOLLOW_CHUNK", 3)
    spans = _Spans(records.storage)
    followed = LatestWrites(records.keys)
    followed.catch_up(cast(StorageReader, spans))
    assert spans.spans == [(start, start + 3) for start in range(0, 18, 3)]
    records.latest_writes.catch_up(records.storage)
    assert followed.known == records.latest_writes.known == 18
    assert followed.check_events(records.storage) == 18
    assert followed.tree.root() == records.latest_writes.tree.root()
    assert followed.map.root == records.latest_writes.map.root
    assert followed.expected(records.keys.location("Patient", "p0")) == (
        records.latest_writes.expected(records.keys.location("Patient", "p0"))
    )
    reopened = vault.open()  # the rollback check follows the log in chunks too
    try:
        assert reopened.read("Patient", "p0").version == 2
        assert len(reopened.access_history("p0")) == 3  # created, updated, 4 observations
    finally:
        reopened.storage.close()


def test_a_map_that_disagrees_with_the_leaves_is_refused_at_start(
    vault: Vault, records: RecordStore
) -> None:
    _write_some(records, 2)
    records.storage.close()
    db = HostDatabase.of(vault)
    leaves = db.execute("SELECT idx, data FROM leaves ORDER BY idx").fetchall()
    # Re-sign nothing: only drop the map from the gateway's view by reordering two write leaves
    # of different records; the tree root changes too, so the start check names the rollback.
    db.execute("UPDATE leaves SET data = ? WHERE idx = ?", (leaves[1][1], 0))
    db.execute("UPDATE leaves SET data = ? WHERE idx = ?", (leaves[0][1], 1))
    db.commit()
    with pytest.raises(VaultStateError):
        vault.open()


def test_the_benchmark_switch_serves_reads_unchecked_and_nothing_else(
    vault: Vault, records: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COFFRE_BENCH_UNVERIFIED_READS=1 exists to measure the check; with it, a version put
    back is served (which is why it is for benchmarks only), and writes still check."""
    _write_some(records, 3)
    _put_back_version_one(vault, records, "p0")
    monkeypatch.setenv("COFFRE_BENCH_UNVERIFIED_READS", "1")
    (vault.folder / BENCHMARK_FILE).write_text("sealed\n")  # made for a benchmark
    unchecked = vault.open()
    try:
        assert unchecked.read("Patient", "p0").version == 1
        with pytest.raises(SealError), unchecked.writer() as writer:
            writer.update("Patient", "p0", {"resourceType": "Patient", "id": "p0"})
    finally:
        unchecked.storage.close()
