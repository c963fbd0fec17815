"""The log as C2SP tlog-tiles (c2sp.org/tlog-tiles): hash tiles and entry bundles.

A hash tile ``(L, N)`` holds 256 consecutive nodes of the tree at height ``8 * L``: the
roots of the perfect subtrees of ``256**L`` leaves numbered ``N * 256`` to ``N * 256 + 255``
at that height. The entry bundle ``N`` holds the leaves of the level-0 tile ``N``, each as
a big-endian uint16 length and its bytes. The rightmost tile of each level and the last
bundle are partial in most trees: ``W`` < 256 hashes or leaves, named ``<N>.p/<W>``.

Nothing here does I/O. The server cuts tiles out of the nodes and leaves it stores; an
auditor hashes each bundle into the roots of its perfect subtrees (``bundle_roots``) and
joins those into the tree's root (``root_from_bundles``), never trusting a served hash.
Hashes are computed a tile at a time, on concatenated bytes, without an object per node.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from coffre.ledger.errors import LedgerError
from coffre.ledger.hashing import HASH_SIZE
from coffre.ledger.tree import CompactRange

TILE_HEIGHT = 8
"""Tree levels a tile spans: a tile's hashes are nodes 8 levels above those of the tile below."""
TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes in a full tile, leaves in a full entry bundle."""
MAX_LEVEL = 63
MAX_ENTRY_BYTES = 0xFFFF
"""The longest leaf an entry bundle can carry: its length is a uint16."""

# At most 18 digits in N: a tree of 2**64 leaves has tiles up to 2**56, of 17 digits.
_PATH = re.compile(
    r"(?:entries|(?P<level>0|[1-9][0-9]?))/(?P<index>(?:x[0-9]{3}/){0,5}[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?",
    re.ASCII,
)
_PAIRS = struct.Struct(f"{2 * HASH_SIZE}s")


@dataclass(frozen=True, slots=True)
class TileId:
    """A hash tile (``level`` 0 to 63) or an entry bundle (``level`` None), and its width."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    def path(self) -> str:
        """``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``, relative to the log's prefix."""
        if self.level is not None and not 0 <= self.level <= MAX_LEVEL:
            raise ValueError(f"a tile's level is 0 to {MAX_LEVEL}, not {self.level}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise ValueError(f"a tile holds 1 to {TILE_WIDTH} hashes, not {self.width}")
        level = "entries" if self.level is None else str(self.level)
        suffix = f".p/{self.width}" if self.partial else ""
        return f"tile/{level}/{index_path(self.index)}{suffix}"

    @classmethod
    def parse(cls, path: str) -> TileId | None:
        """The tile a path (after ``tile/``) names, or None unless it is in the spec's one
        spelling: no leading zeros in ``L`` or ``W``, no ``x000/`` in front of ``N``, ``W``
        below 256."""
        match = _PATH.fullmatch(path)
        if match is None:
            return None
        level = None if match["level"] is None else int(match["level"])
        index = int(match["index"].replace("x", "").replace("/", ""))
        width = TILE_WIDTH if match["width"] is None else int(match["width"])
        tile = cls(level, index, width)
        if (level or 0) > MAX_LEVEL or width > TILE_WIDTH or tile.path() != f"tile/{path}":
            return None
        return tile


def index_path(index: int) -> str:
    """A tile index as path elements of three digits, all but the last prefixed with ``x``:
    1234067 is ``x001/x234/067``."""
    if index < 0:
        raise ValueError(f"a tile index is not negative, not {index}")
    groups = []
    while True:
        index, group = divmod(index, 1000)
        groups.append(f"{group:03d}")
        if index == 0:
            break
    return "/".join([*(f"x{group}" for group in reversed(groups[1:])), groups[0]])


def tile_width(size: int, level: int, index: int) -> int:
    """How many hashes of tile ``(level, index)`` a tree of ``size`` leaves has (0 to 256);
    for level 0, also how many leaves of entry bundle ``index``."""
    nodes = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, nodes - index * TILE_WIDTH))


def entry_bundles(size: int) -> list[TileId]:
    """The entry bundles that hold the leaves of a tree of ``size``, in order."""
    full, rest = divmod(size, TILE_WIDTH)
    bundles = [TileId(None, index) for index in range(full)]
    return [*bundles, TileId(None, full, rest)] if rest else bundles


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """Entries as a bundle: each a big-endian uint16 length, then its bytes."""
    lengths = set(map(len, entries))
    if max(lengths, default=0) > MAX_ENTRY_BYTES:
        raise LedgerError(f"an entry bundle carries entries of at most {MAX_ENTRY_BYTES} bytes")
    if len(lengths) == 1:  # every leaf of a format is one size: one prefix before each
        return lengths.pop().to_bytes(2, "big").join([b"", *entries])
    return b"".join(chain.from_iterable((len(e).to_bytes(2, "big"), e) for e in entries))


def split_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle; LedgerError if it ends inside one."""
    if len(data) >= 2:
        # The usual case, entries all of one length: checked and cut in C, not entry by entry.
        stride = int.from_bytes(data[:2], "big") + 2
        count = len(data) // stride
        if (
            count * stride == len(data)
            and data[::stride] == data[:1] * count
            and data[1::stride] == data[1:2] * count
        ):
            return list(chain.from_iterable(struct.iter_unpack(f"2x{stride - 2}s", data)))
    entries: list[bytes] = []
    offset = 0
    while offset < len(data):
        end = offset + 2 + int.from_bytes(data[offset : offset + 2], "big")
        if offset + 2 > len(data) or end > len(data):
            raise LedgerError(f"the entry bundle ends inside its entry {len(entries)}")
        entries.append(data[offset + 2 : end])
        offset = end
    return entries


def leaf_hashes(entries: Sequence[bytes]) -> bytes:
    """The RFC 9162 leaf hashes of ``entries``, concatenated: a level-0 tile."""
    sha256 = hashlib.sha256
    return b"".join([sha256(b"\x00" + entry).digest() for entry in entries])


def _fold(hashes: bytes) -> bytes:
    """The root of a perfect subtree, from its 2**k concatenated bottom hashes."""
    sha256 = hashlib.sha256
    while len(hashes) > HASH_SIZE:
        hashes = b"".join(
            [sha256(b"\x01" + pair).digest() for (pair,) in _PAIRS.iter_unpack(hashes)]
        )
    return hashes


def subtree_roots(hashes: bytes) -> list[bytes]:
    """The roots of the perfect subtrees, largest first, that make up a run of concatenated
    hashes starting at a tile's first: one root for a full tile, one per set bit of the
    width for a partial one (the right edge of a tree, as a ``CompactRange`` holds it)."""
    count, rest = divmod(len(hashes), HASH_SIZE)
    if rest:
        raise ValueError(f"hashes are {HASH_SIZE} bytes each")
    roots, offset = [], 0
    for bit in reversed(range(count.bit_length())):
        if count >> bit & 1:
            end = offset + (HASH_SIZE << bit)
            roots.append(_fold(hashes[offset:end]))
            offset = end
    return roots


def bundle_roots(entries: Sequence[bytes]) -> list[bytes]:
    """The subtree roots (``subtree_roots``) of a bundle's leaves."""
    return subtree_roots(leaf_hashes(entries))


def root_from_bundles(size: int, roots: Sequence[Sequence[bytes]]) -> bytes:
    """The root of a tree of ``size`` leaves from ``bundle_roots`` of each of its entry
    bundles, in order."""
    full, rest = divmod(size, TILE_WIDTH)
    if len(roots) != full + (rest > 0) or any(len(r) != 1 for r in roots[:full]):
        raise ValueError(f"a tree of size {size} has {full} full bundles and {rest} more leaves")
    tiles = CompactRange()  # each full bundle's root is one "leaf" 8 levels up
    tiles.extend(r[0] for r in roots[:full])
    return CompactRange(size, [*tiles.hashes, *(roots[full] if rest else ())]).root()
