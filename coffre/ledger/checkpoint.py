"""Checkpoints (c2sp.org/tlog-checkpoint): the signed statement of the log's size and root.

The body is the origin, the tree size, the base64 root, then extension lines. Coffre adds
one: ``map16 <base64 root>``, the root of the verifiable map (location -> latest leaf), so
that one signature covers both and the host cannot roll back either alone. Witnesses add
c2sp.org/tlog-cosignature lines to the same note.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from coffre.ledger.errors import NoteFormatError, SignatureError
from coffre.ledger.hashing import HASH_SIZE
from coffre.ledger.note import (
    Note,
    Signer,
    VerifierKey,
    b64,
    cosign_note,
    parse_note,
    sign_note,
    unb64,
    verify_note,
)

MAP_PREFIX = "map16 "
"""The map's extension line. Checkpoints signed before 2026-12-05 carry ``map <root>``, the
root of a binary map Coffre no longer computes: an extension line like any other now, so
that such a vault opens and its next write signs the map's root in this line."""
_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f]")
_MAX_SIZE = (1 << 64) - 1
_MAX_DIGITS = len(str(_MAX_SIZE))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's origin, tree size and root, and any extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for line in (self.origin, *self.extensions):
            if not line or _CONTROL.search(line):
                raise ValueError(f"a checkpoint line is non-empty, on one line: {line!r}")
        if not 0 <= self.size <= _MAX_SIZE:
            raise ValueError(f"a tree size is a 64-bit unsigned integer, not {self.size}")
        if len(self.root) != HASH_SIZE:
            raise ValueError(f"a root hash is {HASH_SIZE} bytes")
        _map_root(self.extensions)

    @property
    def map_root(self) -> bytes | None:
        """The verifiable map's root from the ``map16`` extension line, if there is one."""
        return _map_root(self.extensions)

    def body(self) -> str:
        """The note text: every line ends with a newline."""
        lines = (self.origin, str(self.size), b64(self.root), *self.extensions)
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint from a note's text, refusing anything the format does not allow."""
        if not text.endswith("\n"):
            raise NoteFormatError("a checkpoint body ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteFormatError("a checkpoint has an origin, a size and a root hash")
        origin, size, root, *extensions = lines
        if not _SIZE.fullmatch(size):
            raise NoteFormatError(f"a tree size is a decimal without leading zeros: {size[:40]!r}")
        if len(size) > _MAX_DIGITS:  # before int(), which refuses 4,300 digits in its own words
            message = (
                f"a tree size is a 64-bit unsigned integer, not {size[:20]}… ({len(size):,} digits)"
            )
            raise NoteFormatError(message)
        try:
            return cls(origin, int(size), _root(root, "root hash"), tuple(extensions))
        except ValueError as error:
            raise NoteFormatError(str(error)) from None


def map_extension(map_root: bytes) -> str:
    """The extension line that carries the verifiable map's root."""
    if len(map_root) != HASH_SIZE:
        raise ValueError(f"a map root is {HASH_SIZE} bytes")
    return MAP_PREFIX + b64(map_root)


def sign_checkpoint(checkpoint: Checkpoint, name: str, signer: Signer) -> Note:
    """The checkpoint as a note signed by the log's key (Ed25519, type 0x01)."""
    body = checkpoint.body()
    return Note(body, (sign_note(body, name, signer),))


def cosign_checkpoint(note: Note, name: str, signer: Signer, timestamp: int) -> Note:
    """``note`` with a witness's cosignature added, as of ``timestamp`` (POSIX seconds).

    A witness calls this only after checking the log's signature and the consistency of
    this checkpoint with the last one it cosigned.
    """
    Checkpoint.parse(note.text)
    return note.with_signature(cosign_note(note.text, name, signer, timestamp))


def open_checkpoint(
    note: Note | str | bytes,
    log_key: VerifierKey,
    witnesses: Sequence[VerifierKey] = (),
    quorum: int = 0,
    origin: str | None = None,
) -> Checkpoint:
    """The checkpoint in ``note``, once signed by ``log_key`` and cosigned by ``quorum``
    of ``witnesses``, for the log ``origin`` (by default, as the spec recommends, the
    log key's name).
    """
    if not isinstance(note, Note):
        note = parse_note(note)
    verified = {v.key for v in verify_note(note, [log_key, *witnesses])}
    if log_key not in verified:
        raise SignatureError(f"the checkpoint is not signed by {log_key.name}")
    cosigned = len(verified & set(witnesses))
    if cosigned < quorum:
        raise SignatureError(f"{cosigned} witness cosignatures where {quorum} are required")
    checkpoint = Checkpoint.parse(note.text)
    expected = log_key.name if origin is None else origin
    if checkpoint.origin != expected:
        raise SignatureError(f"the checkpoint is for {checkpoint.origin!r}, not {expected!r}")
    return checkpoint


def _map_root(extensions: tuple[str, ...]) -> bytes | None:
    lines = [e[len(MAP_PREFIX) :] for e in extensions if e.startswith(MAP_PREFIX)]
    if len(lines) > 1:
        raise ValueError("a checkpoint has at most one map line")
    return _root(lines[0], "map root") if lines else None


def _root(text: str, what: str) -> bytes:
    """A hash in canonical base64; any other spelling would make two bodies for one root."""
    try:
        root = unb64(text)
    except ValueError as error:
        raise ValueError(f"the {what} is {error}") from None
    if len(root) != HASH_SIZE:
        raise ValueError(f"the {what} is not {HASH_SIZE} bytes")
    return root
