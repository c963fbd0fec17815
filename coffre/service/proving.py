"""The proofs the gateway hands out, to auditors, clients and witnesses: each checked
against the root of a checkpoint it signed before it leaves.

Proofs are cut from the perfect subtrees the integrator stored (``tree_nodes``), which are
the host's rows: nothing binds them to the leaves but this check. Unchecked, a host that
rewrote them would have the gateway serve its honest log with proofs of a fork, which
auditors would report and witnesses refuse to cosign. A proof that does not verify has
the signed tree rebuilt from the leaves (every one up to the signed size is read and
hashed, as at start); if the leaves give the signed root, the stored subtrees that differ
from the rebuilt ones are rewritten, a warning says how many, and the proof is cut again.
If they do not, the leaves themselves were altered: no proof is given
(``UnprovableError``), rather than one that misleads.

Checking costs a proof's reads and hashes twice over (the old root it starts from, and,
for a tree smaller than the signed one, the proof that leads from that tree to it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from itertools import groupby

from coffre.exceptions import StorageError
from coffre.ledger import CompactRange, LedgerError, SignedTree, leaf_hash, subtree_from_nodes
from coffre.ledger.proofs import (
    SubtreeHash,
    verified_consistency_proof,
    verified_inclusion_proof,
)
from coffre.ledger.tree import Node
from coffre.service.ledger import FOLLOW_CHUNK, STORED_EVERY, stored_node
from coffre.storage.base import Storage, StorageReader

log = logging.getLogger("coffre.ledger")

Prove = Callable[[SubtreeHash], list[bytes]]
"""A proof cut from a source of subtree hashes and verified, or LedgerError."""


class UnprovableError(LedgerError):
    """Neither the stored tree nor the leaves give the root the log signed: no proof that
    verifies can be given."""


class TreeProofs:
    """Inclusion and consistency proofs of the signed tree, verified before they leave,
    the stored tree repaired from the leaves when one does not verify."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._repairing = threading.Lock()

    def inclusion(self, signed: SignedTree, index: int, size: int) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of ``size`` leaves (at most the
        signed size)."""
        return self._verified(
            signed, lambda subtree: verified_inclusion_proof(index, size, subtree, signed)
        )

    def consistency(self, signed: SignedTree, old: int, new: int) -> list[bytes]:
        """The proof that the tree of ``new`` leaves (at most the signed size) extends
        the tree of ``old`` leaves."""
        return self._verified(
            signed, lambda subtree: verified_consistency_proof(old, new, subtree, signed)
        )

    def _verified(self, signed: SignedTree, prove: Prove) -> list[bytes]:
        stored = subtree_from_nodes(stored_node(self._storage))
        try:
            return prove(stored)
        except (LedgerError, StorageError):  # a node altered, or missing
            pass
        with self._repairing:  # one rebuild at a time: those who waited need none
            try:
                return prove(stored)
            except (LedgerError, StorageError):
                self._repair(signed)
        try:
            return prove(stored)
        except (LedgerError, StorageError) as error:
            log.error("the log's stored tree, once repaired, still gives no proof: %s", error)
            raise UnprovableError(
                f"the log's stored tree gives no proof that leads to its signed root: {error}"
            ) from None

    def _repair(self, signed: SignedTree) -> None:
        wrong = _rebuilt_nodes(self._storage, signed)
        if not wrong:  # the proof failed otherwise: cutting it again tells
            return
        with self._storage.transaction() as txn:
            txn.put_nodes(wrong)
        log.warning(
            "the log's stored tree did not give the root signed at size %d: %d of its nodes,"
            " altered or dropped by the host, were rewritten from the leaves",
            signed.size,
            len(wrong),
        )


def _rebuilt_nodes(reader: StorageReader, signed: SignedTree) -> list[Node]:
    """The perfect subtrees of the signed tree that the storage should hold and holds
    otherwise, or not at all, rebuilt from the leaves; UnprovableError if the leaves do not
    give the signed root (they were altered: the nodes rebuilt would be as wrong)."""
    tree = CompactRange()
    wrong: list[Node] = []
    while tree.size < signed.size:
        data = reader.leaves(tree.size, min(signed.size, tree.size + FOLLOW_CHUNK))
        if not data:
            break
        nodes = tree.extend_with_nodes([leaf_hash(leaf) for leaf in data], STORED_EVERY)
        wrong += _differing(reader, nodes)
    if tree.size != signed.size or tree.root() != signed.root:
        log.error(
            "the log's leaves do not give the root signed at size %d: they were altered",
            signed.size,
        )
        raise UnprovableError(
            f"the log's leaves do not give the root it signed at size {signed.size}"
        )
    return wrong


def _differing(reader: StorageReader, nodes: list[Node]) -> list[Node]:
    """Those of ``nodes`` (as a tree's growth emits them: at each level, consecutive) that
    the storage holds with another hash, or lacks."""
    wrong: list[Node] = []
    for level, group in groupby(sorted(nodes), key=lambda node: node[0]):
        row = list(group)
        first = row[0][1]
        try:
            held = dict(enumerate(reader.nodes(level, first, first + len(row)), first))
        except StorageError:  # a gap in the row: every node of it is rewritten
            held = {}
        wrong += [node for node in row if held.get(node[1]) != node[2]]
    return wrong
