"""Checkpoints: build, sign, serialize, parse, verify; tampering and cosignatures."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.ledger import (
    Checkpoint,
    Note,
    NoteFormatError,
    SignatureError,
    VerifierKey,
    cosign_checkpoint,
    map_extension,
    open_checkpoint,
    parse_note,
    sign_checkpoint,
)
from coffre.ledger.checkpoint import MAP_PREFIX
from coffre.ledger.note import ALG_COSIGNATURE_V1, ALG_ED25519, NoteSignature
from coffre.seal.signing import Ed25519Signer

ORIGIN = "coffre.example/log"
LOG = Ed25519Signer.generate()
LOG_KEY = VerifierKey(ORIGIN, ALG_ED25519, LOG.public_key)
WITNESSES = [Ed25519Signer.generate() for _ in range(3)]
WITNESS_KEYS = [
    VerifierKey(f"witness{i}.example", ALG_COSIGNATURE_V1, w.public_key)
    for i, w in enumerate(WITNESSES)
]
ROOT = bytes(range(32))
MAP_ROOT = bytes(range(32, 64))
CHECKPOINT = Checkpoint(ORIGIN, 20852163, ROOT, (map_extension(MAP_ROOT),))


def _cosigned(count: int) -> str:
    note = sign_checkpoint(CHECKPOINT, ORIGIN, LOG)
    for witness, key in zip(WITNESSES[:count], WITNESS_KEYS, strict=False):
        note = cosign_checkpoint(note, key.name, witness, 1_700_000_000)
    return note.serialize()


def test_the_body_is_the_c2sp_layout() -> None:
    root = base64.b64encode(ROOT).decode()
    assert CHECKPOINT.body() == (
        f"{ORIGIN}\n20852163\n{root}\nmap16 {base64.b64encode(MAP_ROOT).decode()}\n"
    )
    assert CHECKPOINT.map_root == MAP_ROOT
    assert Checkpoint(ORIGIN, 0, ROOT).map_root is None


def test_round_trip_and_verification() -> None:
    text = sign_checkpoint(CHECKPOINT, ORIGIN, LOG).serialize()
    assert Checkpoint.parse(parse_note(text).text) == CHECKPOINT
    assert open_checkpoint(text, LOG_KEY) == CHECKPOINT
    assert open_checkpoint(text.encode(), LOG_KEY) == CHECKPOINT
    assert open_checkpoint(parse_note(text), LOG_KEY) == CHECKPOINT


@given(
    origin=st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cs",)), min_size=1),
    size=st.integers(0, (1 << 64) - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(
        st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cs",)), min_size=1),
        max_size=3,
    ),
)
def test_any_checkpoint_round_trips(
    origin: str, size: int, root: bytes, extensions: list[str]
) -> None:
    extensions = [e for e in extensions if not e.startswith(MAP_PREFIX)]
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    text = sign_checkpoint(checkpoint, ORIGIN, LOG).serialize()
    assert open_checkpoint(text, LOG_KEY, origin=origin) == checkpoint


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace("20852163", "20852164"),
        lambda t: t.replace("\nmap16 ", "\nmap16  "),
        lambda t: t.replace(f"\n\n— {ORIGIN} ", "\nextra\n\n— " + ORIGIN + " "),
        lambda t: t.replace(f"{ORIGIN}\n", "coffre.example/other\n", 1),
    ],
    ids=["size", "map line", "added line", "origin"],
)
def test_a_tampered_body_is_refused(tamper: Callable[[str], str]) -> None:
    text = sign_checkpoint(CHECKPOINT, ORIGIN, LOG).serialize()
    with pytest.raises((SignatureError, NoteFormatError)):
        open_checkpoint(tamper(text), LOG_KEY)


def test_a_tampered_signature_is_refused() -> None:
    note = parse_note(sign_checkpoint(CHECKPOINT, ORIGIN, LOG).serialize())
    (sig,) = note.signatures
    forged = bytearray(sig.signature)
    forged[10] ^= 1
    tampered = Note(note.text, (NoteSignature(sig.name, sig.key_id, bytes(forged)),))
    with pytest.raises(SignatureError, match="invalid signature"):
        open_checkpoint(tampered.serialize(), LOG_KEY)


def test_another_key_name_or_key_is_refused() -> None:
    text = sign_checkpoint(CHECKPOINT, ORIGIN, LOG).serialize()
    renamed = text.replace(f"— {ORIGIN} ", "— coffre.example/other ")
    with pytest.raises(SignatureError):
        open_checkpoint(renamed, LOG_KEY)
    impostor = VerifierKey(ORIGIN, ALG_ED25519, Ed25519Signer.generate().public_key)
    with pytest.raises(SignatureError):
        open_checkpoint(text, impostor)


def test_the_origin_must_be_the_expected_log() -> None:
    other = VerifierKey("someone.else", ALG_ED25519, LOG.public_key)
    text = sign_checkpoint(CHECKPOINT, other.name, LOG).serialize()
    with pytest.raises(SignatureError, match="is for"):
        open_checkpoint(text, other)
    assert open_checkpoint(text, other, origin=ORIGIN) == CHECKPOINT


def test_witness_cosignatures_and_quorum() -> None:
    text = _cosigned(2)
    assert open_checkpoint(text, LOG_KEY, WITNESS_KEYS, quorum=2) == CHECKPOINT
    with pytest.raises(SignatureError, match="2 witness cosignatures where 3"):
        open_checkpoint(text, LOG_KEY, WITNESS_KEYS, quorum=3)


def test_a_bad_cosignature_rejects_the_checkpoint() -> None:
    lines = _cosigned(1).splitlines(keepends=True)
    name, b64 = lines[-1].rstrip("\n").split(" ")[1:]
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    lines[-1] = f"— {name} {base64.b64encode(raw).decode()}\n"
    with pytest.raises(SignatureError, match="invalid signature"):
        open_checkpoint("".join(lines), LOG_KEY, WITNESS_KEYS, quorum=1)


def test_cosignatures_alone_do_not_make_a_checkpoint() -> None:
    note = parse_note(_cosigned(2))
    witnessed_only = Note(note.text, note.signatures[1:])
    with pytest.raises(SignatureError, match="not signed by"):
        open_checkpoint(witnessed_only.serialize(), LOG_KEY, WITNESS_KEYS, quorum=2)


def test_only_checkpoints_are_cosigned() -> None:
    note = sign_checkpoint(CHECKPOINT, ORIGIN, LOG)
    not_a_checkpoint = Note("hello\n", note.signatures)
    with pytest.raises(NoteFormatError):
        cosign_checkpoint(not_a_checkpoint, "w", WITNESSES[0], 1_700_000_000)


@pytest.mark.parametrize(
    "body",
    [
        "origin\n1\n",
        "origin\n01\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n-1\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n+1\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n\u0661\n" + base64.b64encode(ROOT).decode() + "\n",  # an Arabic-Indic 1
        f"origin\n{1 << 64}\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n1\n" + base64.b64encode(ROOT[:31]).decode() + "\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode().rstrip("=") + "\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode(),
        "\n1\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode() + "\n\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode() + "\nmap16 nope\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode() + "\n" + map_extension(ROOT) * 2,
    ],
)
def test_malformed_bodies_are_refused(body: str) -> None:
    with pytest.raises(NoteFormatError):
        Checkpoint.parse(body)


def test_a_size_of_thousands_of_digits_is_refused_as_too_large() -> None:
    """Not with Python's own message about reading ints of over 4,300 digits."""
    body = "origin\n" + "9" * 5000 + "\n" + base64.b64encode(ROOT).decode() + "\n"
    with pytest.raises(NoteFormatError, match="64-bit unsigned integer, not 9999") as refused:
        Checkpoint.parse(body)
    assert len(str(refused.value)) < 200


def test_checkpoints_check_their_fields() -> None:
    for args in (
        ("", 1, ROOT),
        ("a\nb", 1, ROOT),
        ("log", -1, ROOT),
        ("log", 1 << 64, ROOT),
        ("log", 1, ROOT[:31]),
    ):
        with pytest.raises(ValueError):
            Checkpoint(*args)
    with pytest.raises(ValueError):
        Checkpoint("log", 1, ROOT, ("",))
    with pytest.raises(ValueError):
        Checkpoint("log", 1, ROOT, (MAP_PREFIX + "x" * 44,))
    with pytest.raises(ValueError):
        map_extension(ROOT[:31])
