"""Signed notes (c2sp.org/signed-note), their verifier keys, and witness cosignatures.

A note is a text ending in a newline, a blank line, then signature lines
``— <key name> <base64(4-byte key ID || signature)>``. Two signature types are spoken:
Ed25519 (0x01) over the text, for the log's own key, and the timestamped Ed25519
cosignature of c2sp.org/tlog-cosignature (0x04), for witnesses.

Verification follows the spec: signatures from unknown keys are ignored, a failing
signature from a known key rejects the whole note, and so does having no valid one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from coffre.ledger.errors import NoteFormatError, SignatureError
from coffre.seal.signing import Ed25519Verifier

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100
"""More signature lines than this and the note is refused (the spec asks for at least 16)."""

_DASH = "\u2014 "
_HEX_ID = re.compile(r"[0-9a-f]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_COSIGNATURE_BYTES = 8 + 64


class Signer(Protocol):
    """A private key that signs, in software or in an HSM."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class Verifier(Protocol):
    """A public key that checks signatures."""

    @property
    def public_key(self) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """SHA-256(key name || 0x0A || signature type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.key_id) != 4 or not self.signature:
            raise ValueError("a note signature is a 4-byte key ID and a signature")

    def line(self) -> str:
        return f"{_DASH}{self.name} {b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A text and the signatures that go with it."""

    text: str
    signatures: tuple[NoteSignature, ...] = ()

    def __post_init__(self) -> None:
        _check_text(self.text)
        if len(self.signatures) > MAX_SIGNATURES:
            raise ValueError(f"a note carries at most {MAX_SIGNATURES} signatures")

    def with_signature(self, signature: NoteSignature) -> Note:
        return Note(self.text, (*self.signatures, signature))

    def serialize(self) -> str:
        if not self.signatures:
            raise ValueError("a signed note has at least one signature")
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A named public key, written ``<name>+<hex key ID>+<base64(type || public key)>``."""

    name: str
    alg: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise ValueError(f"signature type {self.alg:#04x} is not Ed25519 nor cosignature/v1")
        if len(self.public_key) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        name, _, rest = vkey.partition("+")
        hex_id, _, b64 = rest.partition("+")
        if not _HEX_ID.fullmatch(hex_id):
            raise NoteFormatError("a verifier key is <name>+<8 hex digits>+<base64 key>")
        key = _unb64(b64, "verifier key")
        try:
            parsed = cls(name, key[0], key[1:])
        except (ValueError, IndexError) as error:
            raise NoteFormatError(f"malformed verifier key: {error}") from None
        if parsed.key_id.hex() != hex_id:
            raise NoteFormatError(f"verifier key {name} has key ID {parsed.key_id.hex()}")
        return parsed

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.alg, self.public_key)

    def verifier(self) -> Verifier:
        return Ed25519Verifier(self.public_key)

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{b64(bytes([self.alg]) + self.public_key)}"


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """A signature that checked out, and for a cosignature the time it claims."""

    key: VerifierKey
    timestamp: int | None


def parse_note(data: bytes | str) -> Note:
    """Split a signed note into its text and signature lines, refusing anything malformed."""
    try:
        note = data.decode() if isinstance(data, bytes) else data
        note.encode()
    except UnicodeError:
        raise NoteFormatError("a signed note is UTF-8") from None
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("a signed note has a blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise NoteFormatError("a signed note ends with a signature line and a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(f"a note carries at most {MAX_SIGNATURES} signatures")
    try:
        return Note(text, tuple(_parse_signature(line) for line in lines))
    except ValueError as error:
        raise NoteFormatError(str(error)) from None


def sign_note(text: str, name: str, signer: Signer) -> NoteSignature:
    """An Ed25519 (type 0x01) signature of ``text``."""
    _check_text(text)
    kid = key_id(name, ALG_ED25519, signer.public_key)
    return NoteSignature(name, kid, signer.sign(text.encode()))


def cosign_note(text: str, name: str, signer: Signer, timestamp: int) -> NoteSignature:
    """A c2sp.org/tlog-cosignature v1 (type 0x04): ``timestamp`` and Ed25519 signature."""
    _check_text(text)
    if not 0 <= timestamp < 1 << 63:
        raise ValueError("a cosignature timestamp is a POSIX time below 2**63")
    signature = signer.sign(_cosigned_message(text, timestamp))
    kid = key_id(name, ALG_COSIGNATURE_V1, signer.public_key)
    return NoteSignature(name, kid, timestamp.to_bytes(8, "big") + signature)


def verify_note(note: Note, keys: Sequence[VerifierKey]) -> tuple[VerifiedSignature, ...]:
    """The signatures of ``note`` by ``keys``, each checked; unknown signers are ignored.

    Raises ``SignatureError`` when a known key's signature fails or none verifies.
    """
    known: dict[tuple[str, bytes], VerifierKey] = {}
    for key in keys:
        if known.setdefault((key.name, key.key_id), key) != key:
            raise ValueError(f"two verifier keys are both {key.name}+{key.key_id.hex()}")
    verified: dict[VerifierKey, VerifiedSignature] = {}
    for signature in note.signatures:
        signer = known.get((signature.name, signature.key_id))
        if signer is not None:
            timestamp = _check_signature(signer, note.text, signature.signature)
            verified.setdefault(signer, VerifiedSignature(signer, timestamp))
    if not verified:
        raise SignatureError("the note has no valid signature from a known key")
    return tuple(verified.values())


def _check_signature(key: VerifierKey, text: str, signature: bytes) -> int | None:
    timestamp = None
    message = text.encode()
    if key.alg == ALG_COSIGNATURE_V1:
        if len(signature) != _COSIGNATURE_BYTES or signature[0] & 0x80:  # time < 2**63
            raise SignatureError(f"malformed cosignature by {key.name}")
        timestamp = int.from_bytes(signature[:8], "big")
        message, signature = _cosigned_message(text, timestamp), signature[8:]
    if not key.verifier().verify(message, signature):
        raise SignatureError(f"invalid signature for key {key.name}+{key.key_id.hex()}")
    return timestamp


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def _parse_signature(line: str) -> NoteSignature:
    if not line.startswith(_DASH):
        raise NoteFormatError(f"a signature line starts with an em dash and a space: {line!r}")
    name, _, b64 = line[len(_DASH) :].partition(" ")
    raw = _unb64(b64, "signature")
    return NoteSignature(name, raw[:4], raw[4:])


def _check_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise ValueError(f"a key name is non-empty, without spaces or '+': {name!r}")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise ValueError("a note's text ends with a newline")
    if _CONTROL.search(text):
        raise ValueError("a note holds no control characters but newlines")
    if not text.isascii() and any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        raise ValueError("a note is UTF-8 text: it holds no lone surrogates")


def b64(data: bytes) -> str:
    """Standard base64, the spelling of every hash, key and signature of the log."""
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    """Standard base64 in its one canonical spelling: another spelling of the same bytes
    would give one hash, key or signature two texts. ValueError says which fault."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("not base64") from None
    if b64(data) != text:
        raise ValueError("not in canonical base64")
    return data


def _unb64(text: str, what: str) -> bytes:
    try:
        return unb64(text)
    except ValueError as error:
        raise NoteFormatError(f"the {what} is {error}") from None
