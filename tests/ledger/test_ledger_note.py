"""Signed notes: Go's sumdb/note vectors, verifier keys, cosignatures, malformed notes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from coffre.ledger import LedgerError, Note, NoteFormatError, SignatureError, VerifierKey
from coffre.ledger import note as note_module
from coffre.ledger.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    MAX_SIGNATURES,
    NoteSignature,
    cosign_note,
    parse_note,
    sign_note,
    verify_note,
)
from coffre.seal.signing import Ed25519Signer, Ed25519Verifier

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "signed_note.json").read_text()
)
GO: dict[str, str] = VECTORS["go"]
TEXT = GO["text"]
PETER = VerifierKey.parse(GO["peter_vkey"])
ENOCH = VerifierKey.parse(GO["enoch_vkey"])


def _go_signer() -> Ed25519Signer:
    """Go's PRIVATE+KEY+<name>+<id>+base64(type || seed)."""
    key = base64.b64decode(GO["signer_key"].split("+", 4)[4])
    assert key[0] == ALG_ED25519
    return Ed25519Signer(key[1:])


def test_signing_reproduces_gos_note_byte_for_byte() -> None:
    signer = _go_signer()
    signed = Note(TEXT, (sign_note(TEXT, "PeterNeumann", signer),))
    assert signed.serialize() == TEXT + "\n" + GO["peter_sig"]
    assert str(VerifierKey("PeterNeumann", ALG_ED25519, signer.public_key)) == GO["peter_vkey"]


def test_verifier_keys_round_trip() -> None:
    for vkey in (GO["peter_vkey"], GO["enoch_vkey"]):
        assert str(VerifierKey.parse(vkey)) == vkey
    assert PETER.key_id.hex() == "c74f20a3"
    assert PETER.alg == ALG_ED25519


def test_only_known_keys_count() -> None:
    signed = parse_note(TEXT + "\n" + GO["peter_sig"] + GO["enoch_sig"])
    assert [v.key for v in verify_note(signed, [PETER])] == [PETER]
    assert [v.key for v in verify_note(signed, [PETER, ENOCH])] == [PETER, ENOCH]
    with pytest.raises(SignatureError):
        verify_note(signed, [])


def test_a_failing_known_signature_rejects_the_note() -> None:
    sig = GO["peter_sig"]
    with pytest.raises(SignatureError, match="PeterNeumann"):
        verify_note(parse_note(TEXT + "\n" + sig[:60] + "ABCD" + sig[60:]), [PETER])
    with pytest.raises(SignatureError):
        verify_note(parse_note(TEXT.replace("problem", "Problem") + "\n" + sig), [PETER])


def test_duplicate_and_unverifiable_signatures() -> None:
    enoch = GO["enoch_sig"]
    enoch_abcd = enoch[:60] + "ABCD" + enoch[60:]
    text = TEXT + "\n" + GO["peter_sig"] * 2 + enoch * 2 + enoch_abcd
    assert [v.key for v in verify_note(parse_note(text), [PETER])] == [PETER]


def test_signatures_of_other_names_or_key_ids_are_ignored() -> None:
    misnamed = GO["peter_sig"].replace("PeterNeumann", "CarmenSandiego")
    wrong_id = GO["peter_sig"].replace("x08g", "xxxx")
    for sig in (misnamed, wrong_id):
        with pytest.raises(SignatureError, match="no valid signature"):
            verify_note(parse_note(TEXT + "\n" + sig), [PETER])


@pytest.mark.parametrize(
    "message",
    [
        TEXT.encode(),
        (TEXT + "\n").encode(),
        (TEXT + "\n" + GO["peter_sig"][:-1]).encode(),
        ("\x01" + TEXT + "\n" + GO["peter_sig"]).encode(),
        b"\xff" + (TEXT + "\n" + GO["peter_sig"]).encode(),
        (TEXT + "\n" + GO["peter_sig"].replace("PeterNeumann", "Bad Name")).encode(),
        (TEXT + "\n" + GO["peter_sig"] + "Unexpected line.\n").encode(),
        (TEXT + "\n" + GO["peter_sig"] * (MAX_SIGNATURES + 1)).encode(),
        (TEXT + "\n" + GO["peter_sig"].replace("— ", "-- ")).encode(),
        (TEXT + "\n" + GO["peter_sig"].replace("AM=", "AN=")).encode(),  # non-canonical
        (TEXT + "\n— PeterNeumann AAAA\n").encode(),  # too short for a key ID and signature
        (TEXT + "\n— PeterNeumann not base64!\n").encode(),
        (TEXT + "\n— a+b " + GO["peter_sig"].split(" ")[-1]).encode(),
    ],
)
def test_malformed_notes_are_refused(message: bytes) -> None:
    with pytest.raises(NoteFormatError):
        parse_note(message)


def test_a_lone_surrogate_is_not_utf8() -> None:
    with pytest.raises(NoteFormatError):
        parse_note(TEXT + "\ud800\n\n" + GO["peter_sig"])


def test_mangled_verifier_keys_are_refused() -> None:
    vkey = GO["peter_vkey"]
    mangled = {vkey[i:j] for i in range(len(vkey)) for j in range(i + 1, len(vkey) + 1)}
    mangled.discard(vkey)
    mangled |= {vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :] for i in range(len(vkey))}
    mangled |= set(GO["bad_vkeys"])
    for bad in mangled:
        with pytest.raises(NoteFormatError):
            VerifierKey.parse(bad)


def test_verifier_keys_check_their_parts() -> None:
    for name, alg, key in (("a+b", 1, bytes(32)), ("", 1, bytes(32)), ("a", 2, bytes(32))):
        with pytest.raises(ValueError):
            VerifierKey(name, alg, key)
    with pytest.raises(ValueError):
        VerifierKey("a", ALG_ED25519, bytes(31))


def test_two_keys_claiming_one_name_and_id_are_a_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(note_module, "key_id", lambda name, alg, key: b"\x00" * 4)
    other = VerifierKey("PeterNeumann", ALG_ED25519, Ed25519Signer.generate().public_key)
    with pytest.raises(ValueError, match="two verifier keys"):
        verify_note(parse_note(TEXT + "\n" + GO["peter_sig"]), [PETER, other])


def test_cosignatures_carry_their_time() -> None:
    witness = Ed25519Signer.generate()
    key = VerifierKey("witness.example/w1", ALG_COSIGNATURE_V1, witness.public_key)
    signed = Note(TEXT, (cosign_note(TEXT, key.name, witness, 1_700_000_000),))
    (verified,) = verify_note(parse_note(signed.serialize()), [key])
    assert (verified.key, verified.timestamp) == (key, 1_700_000_000)
    # The same key as a plain Ed25519 signer has another key ID: the cosignature is not its.
    plain = VerifierKey(key.name, ALG_ED25519, witness.public_key)
    with pytest.raises(SignatureError, match="no valid signature"):
        verify_note(signed, [plain])


def test_a_cosignature_covers_its_time() -> None:
    witness = Ed25519Signer.generate()
    key = VerifierKey("w", ALG_COSIGNATURE_V1, witness.public_key)
    sig = cosign_note(TEXT, "w", witness, 1_700_000_000)
    later = (1_700_000_001).to_bytes(8, "big") + sig.signature[8:]
    for forged in (later, b"\x80" + sig.signature[1:], sig.signature[:-1]):
        with pytest.raises(SignatureError):
            verify_note(Note(TEXT, (NoteSignature("w", sig.key_id, forged),)), [key])


def test_the_c2sp_cosigned_checkpoint_parses() -> None:
    example = VECTORS["c2sp_cosigned_checkpoint"]
    parsed = parse_note(example["note"])
    assert parsed.serialize() == example["note"]
    log, witness = parsed.signatures
    assert (log.name, witness.name) == ("example.com/behind-the-sofa", "witness.example.com/w1")
    assert int.from_bytes(witness.signature[:8], "big") == example["cosignature_time"]


def test_signing_refuses_what_cannot_be_a_note() -> None:
    signer = Ed25519Signer.generate()
    for text in ("no newline", "tab\there\n", ""):
        with pytest.raises(ValueError):
            sign_note(text, "log", signer)
    with pytest.raises(ValueError):
        cosign_note(TEXT, "w", signer, -1)
    with pytest.raises(ValueError):
        cosign_note(TEXT, "w", signer, 1 << 63)
    with pytest.raises(ValueError):
        Note(TEXT).serialize()
    with pytest.raises(ValueError):
        NoteSignature("a b", b"1234", b"sig")
    with pytest.raises(ValueError):
        NoteSignature("ab", b"123", b"sig")


def test_errors_are_ledger_errors() -> None:
    assert issubclass(NoteFormatError, LedgerError)
    assert issubclass(SignatureError, LedgerError)


def test_ed25519_keys() -> None:
    signer = Ed25519Signer.generate()
    verifier = Ed25519Verifier(signer.public_key)
    assert verifier.public_key == signer.public_key
    assert verifier.verify(b"msg", signer.sign(b"msg"))
    assert not verifier.verify(b"msh", signer.sign(b"msg"))
    assert Ed25519Signer.generate().public_key != signer.public_key
    assert signer.public_key.hex() in repr(signer)
    with pytest.raises(ValueError):
        Ed25519Signer(bytes(31))
    with pytest.raises(ValueError):
        Ed25519Verifier(bytes(33))
