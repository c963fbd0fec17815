"""The witness's decision (c2sp.org/tlog-witness): every refusal, the state it keeps, and
that an honest log always gets cosigned while a forked one never does."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.ledger import (
    Checkpoint,
    Note,
    VerifierKey,
    consistency_proof,
    map_extension,
    merkle_root,
    parse_note,
    sign_checkpoint,
    verify_note,
)
from coffre.ledger.errors import NoteFormatError
from coffre.ledger.note import ALG_ED25519
from coffre.ledger.witness import (
    MAX_PROOF_LINES,
    NEVER_COSIGNED,
    InconsistentProof,
    LogState,
    MalformedRequest,
    RootConflict,
    SizeConflict,
    Submission,
    UnknownLog,
    UntrustedSignature,
    Witness,
    WitnessKey,
    WitnessRefusal,
    WitnessState,
    check_quorum,
    parse_witness_key,
)
from coffre.seal.signing import Ed25519Signer

ORIGIN = "example.org/log"
LOG_SIGNER = Ed25519Signer(bytes(range(32)))
LOG_KEY = VerifierKey(ORIGIN, ALG_ED25519, LOG_SIGNER.public_key)
WITNESS_KEY = WitnessKey("witness.example.org/w1", bytes(range(1, 33)))
NOW = 1_700_000_000


def _leaves(tag: str, count: int) -> list[bytes]:
    return [hashlib.sha256(f"{tag}:{i}".encode()).digest() for i in range(count)]


def _note(leaves: list[bytes], size: int, origin: str = ORIGIN, signer=LOG_SIGNER) -> Note:
    checkpoint = Checkpoint(origin, size, merkle_root(leaves[:size]), (map_extension(bytes(32)),))
    return sign_checkpoint(checkpoint, origin, signer)


def _body(leaves: list[bytes], old: int, new: int, note: Note | None = None) -> bytes:
    proof = consistency_proof(old, new, lambda begin, end: merkle_root(leaves[begin:end]))
    return Submission(old, tuple(proof), note or _note(leaves, new)).serialize().encode()


def _witness() -> Witness:
    return Witness(WITNESS_KEY, [LOG_KEY])


def _state_at(leaves: list[bytes], size: int) -> WitnessState:
    return _witness().add_checkpoint(WitnessState(), _body(leaves, 0, size), NOW).state


def _refusal(state: WitnessState, body: bytes) -> WitnessRefusal:
    with pytest.raises(WitnessRefusal) as raised:
        _witness().add_checkpoint(state, body, NOW)
    return raised.value


# -- cosigning -----------------------------------------------------------------------------


def test_a_first_checkpoint_is_cosigned_with_a_timestamped_cosignature() -> None:
    leaves = _leaves("a", 5)
    note = _note(leaves, 5)
    cosigned = _witness().add_checkpoint(WitnessState(), _body(leaves, 0, 5, note), NOW)
    assert cosigned.response() == cosigned.signature.line()
    assert cosigned.response().startswith("\u2014 witness.example.org/w1 ")
    answered = parse_note(note.serialize() + cosigned.response())
    (verified,) = verify_note(answered, [WITNESS_KEY.verifier_key])
    assert verified.timestamp == NOW
    assert cosigned.state.get(ORIGIN) == LogState(5, merkle_root(leaves), note.serialize())


def test_each_extension_is_cosigned_and_the_state_follows() -> None:
    leaves, state = _leaves("a", 40), WitnessState()
    for old, new in ((0, 1), (1, 2), (2, 7), (7, 8), (8, 8), (8, 33), (33, 40)):
        state = _witness().add_checkpoint(state, _body(leaves, old, new), NOW + new).state
        assert state.get(ORIGIN).size == new
        assert state.get(ORIGIN).root == merkle_root(leaves[:new])


def test_the_same_checkpoint_again_is_cosigned_again_at_the_new_time() -> None:
    leaves = _leaves("a", 3)
    state = _state_at(leaves, 3)
    again = _witness().add_checkpoint(state, _body(leaves, 3, 3), NOW + 60)
    assert again.state == state
    (verified,) = verify_note(
        parse_note(_note(leaves, 3).serialize() + again.response()), [WITNESS_KEY.verifier_key]
    )
    assert verified.timestamp == NOW + 60


def test_signatures_from_unknown_keys_are_ignored() -> None:
    leaves = _leaves("a", 2)
    stranger = Ed25519Signer(bytes(32))
    note = _note(leaves, 2)
    other = _note(leaves, 2, signer=stranger).signatures[0]
    renamed = type(other)("someone.else/key", other.key_id, other.signature)
    with_stranger = Note(note.text, (renamed, *note.signatures))
    assert _witness().add_checkpoint(WitnessState(), _body(leaves, 0, 2, with_stranger), NOW)


def test_other_logs_are_tracked_apart() -> None:
    signer = Ed25519Signer(bytes(range(2, 34)))
    other_key = VerifierKey("example.org/other", ALG_ED25519, signer.public_key)
    witness = Witness(WITNESS_KEY, [LOG_KEY, other_key])
    leaves = _leaves("a", 9)
    state = witness.add_checkpoint(WitnessState(), _body(leaves, 0, 9), NOW).state
    other = _note(leaves, 4, origin="example.org/other", signer=signer)
    state = witness.add_checkpoint(state, _body(leaves, 0, 4, other), NOW).state
    assert (state.get(ORIGIN).size, state.get("example.org/other").size) == (9, 4)


# -- each refusal, with the status the spec gives it ------------------------------------------


def test_an_unknown_origin_is_404() -> None:
    leaves = _leaves("a", 2)
    refusal = _refusal(WitnessState(), _body(leaves, 0, 2, _note(leaves, 2, origin="x.org/y")))
    assert isinstance(refusal, UnknownLog) and refusal.status == 404


def test_a_checkpoint_not_signed_by_the_log_s_key_is_403() -> None:
    leaves = _leaves("a", 2)
    forged = _note(leaves, 2, signer=Ed25519Signer(bytes(32)))
    refusal = _refusal(WitnessState(), _body(leaves, 0, 2, forged))
    assert isinstance(refusal, UntrustedSignature) and refusal.status == 403
    note = _note(leaves, 2)
    altered = Note(note.text.replace("\n2\n", "\n3\n"), note.signatures)
    assert _refusal(WitnessState(), _body(leaves, 0, 2, altered)).status == 403


def test_an_old_size_beyond_the_checkpoint_is_400() -> None:
    leaves = _leaves("a", 8)
    state = _state_at(leaves, 5)
    body = Submission(5, (), _note(leaves, 3)).serialize().encode()
    refusal = _refusal(state, body)
    assert isinstance(refusal, MalformedRequest) and refusal.status == 400


def test_an_old_size_other_than_the_cosigned_one_is_409_with_that_size() -> None:
    leaves = _leaves("a", 8)
    state = _state_at(leaves, 5)
    for old, new in ((0, 8), (3, 8), (6, 8), (3, 3)):
        refusal = _refusal(state, _body(leaves, old, new))
        assert isinstance(refusal, SizeConflict) and refusal.status == 409
        assert refusal.size == 5 and refusal.evidence is None
    assert isinstance(_refusal(WitnessState(), _body(leaves, 3, 8)), SizeConflict)


def test_a_smaller_tree_is_never_cosigned() -> None:
    leaves = _leaves("a", 8)
    state = _state_at(leaves, 6)
    assert isinstance(_refusal(state, _body(leaves, 4, 4)), SizeConflict)
    smaller = Submission(6, (), _note(leaves, 4)).serialize().encode()
    assert isinstance(_refusal(state, smaller), MalformedRequest)


def test_the_cosigned_size_with_another_root_is_a_409_fork_kept_as_evidence() -> None:
    leaves, fork = _leaves("a", 6), _leaves("b", 6)
    state = _state_at(leaves, 6)
    refusal = _refusal(state, _body(fork, 6, 6))
    assert isinstance(refusal, RootConflict) and refusal.status == 409
    assert refusal.evidence is not None
    assert _note(fork, 6).serialize() in refusal.evidence.text
    assert _note(leaves, 6).serialize() in refusal.evidence.text


def test_a_proof_that_does_not_verify_is_422_kept_as_evidence() -> None:
    leaves = _leaves("a", 13)
    state = _state_at(leaves, 5)
    good = Submission.parse(_body(leaves, 5, 13))
    flipped = (bytes([good.proof[0][0] ^ 1]) + good.proof[0][1:], *good.proof[1:])
    for proof in (flipped, good.proof[:-1], (*good.proof, bytes(32))):
        refusal = _refusal(state, Submission(5, proof, good.note).serialize().encode())
        assert isinstance(refusal, InconsistentProof) and refusal.status == 422
        assert refusal.evidence is not None and good.note.serialize() in refusal.evidence.text


def test_a_proof_from_size_zero_must_be_empty() -> None:
    leaves = _leaves("a", 4)
    body = Submission(0, (bytes(32),), _note(leaves, 4)).serialize().encode()
    assert isinstance(_refusal(WitnessState(), body), InconsistentProof)


# -- a rollback its operator accepts --------------------------------------------------------


def test_a_rollback_is_accepted_at_its_exact_size_only_keeping_the_history_it_abandons() -> None:
    """A log restored from an older backup (size 4 of a history cosigned up to 9) grows
    again along another history: cosigned once the witness's operator accepts size 4."""
    leaves = _leaves("a", 9)
    state, restored = _state_at(leaves, 9), _note(leaves, 4)
    regrown = [*leaves[:4], *_leaves("b", 3)]
    assert isinstance(_refusal(state, _body(regrown, 4, 7)), SizeConflict)
    refusals = (
        (restored, 5, MalformedRequest, "of size 4, not 5"),
        (_note(leaves, 9), 9, MalformedRequest, "no rollback to accept"),
        (
            _note(leaves, 4, signer=Ed25519Signer(bytes(32))),
            4,
            UntrustedSignature,
            "no valid signature",
        ),
        (_note(leaves, 4, origin="x.org/y"), 4, UnknownLog, "follows no log of that origin"),
    )
    for note, size, refusal, message in refusals:
        with pytest.raises(refusal, match=message):
            _witness().accept_rollback(state, note, size)
    accepted, evidence = _witness().accept_rollback(state, restored, 4)
    assert accepted.get(ORIGIN) == LogState(4, merkle_root(leaves[:4]), restored.serialize())
    assert _note(leaves, 9).serialize() in evidence.text
    assert restored.serialize() in evidence.text
    assert (
        _witness().add_checkpoint(accepted, _body(regrown, 4, 7), NOW).state.get(ORIGIN).size == 7
    )


def test_a_rollback_announced_under_another_key_of_the_same_name_is_refused() -> None:
    """A key given now that did not sign the history cosigned would move the witness to
    another log of the same name."""
    leaves = _leaves("a", 9)
    other_signer = Ed25519Signer(bytes(32))
    other = Witness(WITNESS_KEY, [VerifierKey(ORIGIN, ALG_ED25519, other_signer.public_key)])
    with pytest.raises(UntrustedSignature, match="did not sign the checkpoint of size 9"):
        other.accept_rollback(_state_at(leaves, 9), _note(leaves, 4, signer=other_signer), 4)


def test_each_history_a_rollback_abandons_is_kept_apart() -> None:
    """The same backup restored twice abandons two histories: two pieces of evidence."""
    leaves = _leaves("a", 9)
    restored = _note(leaves, 4)
    state, first = _witness().accept_rollback(_state_at(leaves, 9), restored, 4)
    regrown = [*leaves[:4], *_leaves("b", 8)]
    state = _witness().add_checkpoint(state, _body(regrown, 4, 12), NOW).state
    _, second = _witness().accept_rollback(state, restored, 4)
    assert first.name != second.name
    assert _note(regrown, 12).serialize() in second.text


def _note_text() -> str:
    return _note(_leaves("a", 2), 2).serialize()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 0\n",
        b"old 0\n" + _note_text().encode(),
        b"old 00\n\n" + _note_text().encode(),
        b"old -1\n\n" + _note_text().encode(),
        b"old 1 \n\n" + _note_text().encode(),
        b"old 18446744073709551616\n\n" + _note_text().encode(),
        b"new 0\n\n" + _note_text().encode(),
        b"old 0\r\n\r\n" + _note_text().encode(),
        b"old 0\n\n\xff" + _note_text().encode(),
        b"old 0\nnot base64!\n\n" + _note_text().encode(),
        b"old 0\nAAAA\n\n" + _note_text().encode(),
        b"old 0\n" + b"".join([b"A" * 43 + b"=\n"] * (MAX_PROOF_LINES + 1)) + b"\n" + b"x",
        b"old 0\n\nexample.org/log\n2\nnot a root\n\n\xe2\x80\x94 example.org/log AAAAAAAA\n",
        b"old 0\n\n" + _note_text().encode()[:-1],
    ],
)
def test_a_malformed_body_is_400(body: bytes) -> None:
    refusal = _refusal(WitnessState(), body)
    assert isinstance(refusal, MalformedRequest) and refusal.status == 400


def test_63_proof_lines_are_allowed() -> None:
    proof = (bytes(32),) * MAX_PROOF_LINES
    parsed = Submission.parse(Submission(3, proof, _note(_leaves("a", 3), 3)).serialize().encode())
    assert parsed.proof == proof


@given(
    st.integers(0, (1 << 64) - 1),
    st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_LINES),
)
def test_a_submission_reads_back_as_written(old: int, proof: list[bytes]) -> None:
    submission = Submission(old, tuple(proof), _note(_leaves("a", 2), 2))
    assert Submission.parse(submission.serialize().encode()) == submission


# -- state and keys --------------------------------------------------------------------------


def test_the_state_reads_back_as_written_and_refuses_anything_else() -> None:
    leaves = _leaves("a", 7)
    state = _state_at(leaves, 7).with_log("other.org/log", LogState(3, bytes(32)))
    assert WitnessState.parse(state.serialize()) == state
    assert WitnessState.parse(WitnessState().serialize()).get(ORIGIN) == NEVER_COSIGNED
    other_note = state.serialize().replace('"size": 7', '"size": 6')
    negative = state.serialize().replace('"size": 3', '"size": -3')
    for text in ("", "{}", '{"logs": []}', '{"logs": {"a": {"size": 1}}}', negative, other_note):
        with pytest.raises(NoteFormatError):
            WitnessState.parse(text)


def test_a_witness_key_reads_back_and_names_itself() -> None:
    key = WitnessKey.generate("witness.example.org/w2")
    assert WitnessKey.parse(key.serialize()) == key
    assert key.verifier_key.name == "witness.example.org/w2"
    assert parse_witness_key(str(key.verifier_key)) == key.verifier_key
    assert "seed" not in repr(key)
    with pytest.raises(ValueError):
        WitnessKey.generate("two words")
    with pytest.raises(NoteFormatError):
        WitnessKey.parse('{"name": "w"}')
    with pytest.raises(NoteFormatError, match="not a witness"):
        parse_witness_key(str(LOG_KEY))
    with pytest.raises(ValueError, match="not an Ed25519 log key"):
        Witness(WITNESS_KEY, [key.verifier_key])


def test_a_quorum_is_one_to_all() -> None:
    assert (check_quorum(None, 3), check_quorum(2, 3), check_quorum(None, 0)) == (3, 2, 0)
    for quorum, count in ((0, 3), (4, 3), (1, 0)):
        with pytest.raises(ValueError):
            check_quorum(quorum, count)


# -- an honest log and a forked one --------------------------------------------------------------


@given(st.lists(st.integers(0, 20), min_size=1, max_size=12))
def test_an_honest_log_is_always_cosigned(growth: list[int]) -> None:
    """Whatever its appends, a log that keeps one history gets every checkpoint cosigned."""
    leaves = _leaves("a", sum(growth))
    state, size = WitnessState(), 0
    for added in growth:
        new = size + added
        cosigned = _witness().add_checkpoint(state, _body(leaves, size, new), NOW)
        state, size = cosigned.state, new
    assert state.get(ORIGIN).size == size


@given(st.data())
def test_a_forked_log_is_never_cosigned(data: st.DataObject) -> None:
    """Once a witness cosigned size s, no checkpoint of a history that differs below s is
    cosigned again, whatever size and old size the log claims."""
    cosigned = data.draw(st.integers(1, 40), label="cosigned size")
    fork_at = data.draw(st.integers(0, cosigned - 1), label="first leaf that differs")
    fork_size = data.draw(st.integers(fork_at + 1, 60), label="size of the fork")
    honest = _leaves("a", cosigned)
    fork = honest[:fork_at] + _leaves("b", fork_size - fork_at)
    state = _state_at(honest, cosigned)
    claims = {0, cosigned, min(cosigned, fork_size), data.draw(st.integers(0, fork_size))}
    for old in claims:
        if old <= fork_size:
            with pytest.raises(WitnessRefusal):
                _witness().add_checkpoint(state, _body(fork, old, fork_size), NOW)
    with pytest.raises(WitnessRefusal):
        stale = Submission(cosigned, (), _note(fork, fork_size)).serialize().encode()
        _witness().add_checkpoint(state, stale, NOW)
