"""Coffre's tamper-evident ledger, without I/O: hashing, proofs, checkpoints, the map.

- ``hashing``: RFC 9162 leaf and node hashes, and the tree root as RFC 9162 defines it;
- ``proofs``: which subtrees an inclusion or consistency proof needs, and the proofs,
  from any source of subtree hashes (memory or storage), checked against a signed root
  before they are handed out;
- ``verify``: checking those proofs, RFC 9162 §2.1.3.2 and §2.1.4.2;
- ``tree``: the compact range that grows the tree in O(log n) memory, and a fast root;
- ``note`` and ``checkpoint``: C2SP signed notes, checkpoints carrying the map root,
  witness cosignatures, verifier keys;
- ``smt``: the verifiable map from record location to the hash of its latest leaf;
- ``witness``: a witness's add-checkpoint decision (c2sp.org/tlog-witness), its state
  and its key.

Signing keys come in through the ``Signer`` protocol; ``coffre.seal.signing`` holds the
Ed25519 implementation.
"""

from coffre.ledger.checkpoint import (
    Checkpoint,
    cosign_checkpoint,
    map_extension,
    open_checkpoint,
    sign_checkpoint,
)
from coffre.ledger.errors import (
    ForkError,
    LedgerError,
    NoteFormatError,
    ProofShapeError,
    RootMismatchError,
    SignatureError,
)
from coffre.ledger.hashing import EMPTY_ROOT, leaf_hash, merkle_root, node_hash
from coffre.ledger.note import (
    Note,
    Signer,
    Verifier,
    VerifierKey,
    parse_note,
    verify_note,
)
from coffre.ledger.proofs import (
    SignedTree,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    subtree_from_nodes,
    verified_consistency_proof,
    verified_inclusion_proof,
)
from coffre.ledger.smt import (
    MapChanges,
    MapProof,
    MemoryNodeStore,
    SparseMerkleMap,
    verify_map_proof,
)
from coffre.ledger.tree import CompactRange, root_of
from coffre.ledger.verify import verify_consistency, verify_inclusion

__all__ = [
    "EMPTY_ROOT",
    "Checkpoint",
    "CompactRange",
    "ForkError",
    "LedgerError",
    "MapChanges",
    "MapProof",
    "MemoryNodeStore",
    "Note",
    "NoteFormatError",
    "ProofShapeError",
    "RootMismatchError",
    "SignatureError",
    "SignedTree",
    "Signer",
    "SparseMerkleMap",
    "Verifier",
    "VerifierKey",
    "consistency_proof",
    "consistency_ranges",
    "cosign_checkpoint",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "map_extension",
    "merkle_root",
    "node_hash",
    "open_checkpoint",
    "parse_note",
    "root_of",
    "sign_checkpoint",
    "subtree_from_nodes",
    "verified_consistency_proof",
    "verified_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
    "verify_map_proof",
    "verify_note",
]
