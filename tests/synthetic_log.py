"""A log of many leaves in seconds, for tests that need whole tiles (256 leaves) or tiles of
tiles (65,536): access leaves appended through the write path in big transactions, each
tagged and integrated like any other, with one checkpoint per transaction."""

from __future__ import annotations

import random

from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore

BATCH = 50_000


def append_leaves(records: RecordStore, count: int, seed: int = 0) -> None:
    """Append ``count`` READ leaves of random locations and bodies."""
    rng = random.Random(seed)
    while count > 0:
        batch = min(BATCH, count)
        leaves = [
            Leaf(LeafKind.READ, rng.randbytes(32), 1, rng.randbytes(32), 1_700_000_000_000_000 + i)
            for i in range(batch)
        ]
        with records.writer() as writer:
            writer.record(leaves)
        count -= batch
