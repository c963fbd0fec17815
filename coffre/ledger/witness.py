"""A witness's decisions, without I/O (c2sp.org/tlog-witness, cosignatures per
c2sp.org/tlog-cosignature).

A witness follows logs it knows by origin and verifier key, and remembers for each the
size and root of the latest checkpoint it cosigned. A log submits a new checkpoint with
a consistency proof from that size; the witness cosigns only once the log's signature
holds and the proof shows the new tree extends the one it cosigned before. A witness
therefore never cosigns two checkpoints of one log that fork from each other, and
checkpoints that enough independent witnesses cosigned all lie on one history.

``Witness.add_checkpoint`` returns the new state and the cosignature without keeping
either: the server around it (``coffre.api.witness``) persists the state before it
answers, and serialises requests, so that the check and the update are one step.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coffre.ledger.checkpoint import Checkpoint
from coffre.ledger.errors import LedgerError, NoteFormatError, SignatureError
from coffre.ledger.hashing import EMPTY_ROOT, HASH_SIZE
from coffre.ledger.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Note,
    NoteSignature,
    VerifierKey,
    b64,
    cosign_note,
    parse_note,
    unb64,
    verify_note,
)
from coffre.ledger.verify import verify_consistency
from coffre.seal.signing import ED25519_SEED_BYTES, Ed25519Signer

MAX_PROOF_LINES = 63
"""The most consistency proof lines a request may carry (the spec's limit)."""
SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""The type of a 409 answer that tells the log the size the witness is at."""

_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")
_MAX_SIZE = (1 << 64) - 1


class WitnessRefusal(LedgerError):
    """The witness does not cosign; ``status`` is the HTTP status tlog-witness assigns.

    ``evidence``, when set, is what the log signed that contradicts what the witness
    cosigned before: worth keeping, as it may prove the log forked.
    """

    status = 400

    def __init__(self, message: str, evidence: Evidence | None = None) -> None:
        super().__init__(message)
        self.evidence = evidence


class MalformedRequest(WitnessRefusal):
    """The request body is not an old size, proof lines, a blank line and a checkpoint;
    or its old size is beyond the checkpoint's."""


class UntrustedSignature(WitnessRefusal):
    """The checkpoint carries no valid signature from a key the witness trusts for its log."""

    status = 403


class UnknownLog(WitnessRefusal):
    """The witness follows no log of this origin."""

    status = 404


class SizeConflict(WitnessRefusal):
    """The old size is not the size the witness last cosigned: the log starts again from
    ``size``, which the answer carries."""

    status = 409

    def __init__(self, old: int, size: int) -> None:
        super().__init__(f"the witness is at size {size}, not {old}")
        self.size = size


class RootConflict(WitnessRefusal):
    """A checkpoint of the size the witness last cosigned, with another root: a fork."""

    status = 409


class InconsistentProof(WitnessRefusal):
    """The consistency proof does not lead from the cosigned tree to the new one."""

    status = 422


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the evidence is of (``refused``: a refused checkpoint's note; for a rollback,
    the last cosigned and the restored ones), which names it, and the text to keep."""

    refused: str
    text: str

    @property
    def name(self) -> str:
        """One name per checkpoint: sent again with other proofs, it is kept once."""
        return hashlib.sha256(self.refused.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class LogState:
    """The latest checkpoint a witness cosigned for one log: its size, its root, and the
    note as the log signed it (``None`` before the first)."""

    size: int
    root: bytes
    note: str | None = None


NEVER_COSIGNED = LogState(0, EMPTY_ROOT)


@dataclass(frozen=True, slots=True)
class WitnessState:
    """What a witness cosigned last, by log origin; it never changes, it is replaced."""

    logs: Mapping[str, LogState] = field(default_factory=dict)

    def get(self, origin: str) -> LogState:
        return self.logs.get(origin, NEVER_COSIGNED)

    def with_log(self, origin: str, state: LogState) -> WitnessState:
        return WitnessState({**self.logs, origin: state})

    def serialize(self) -> str:
        logs = {
            origin: {"size": s.size, "root": b64(s.root), "note": s.note}
            for origin, s in sorted(self.logs.items())
        }
        return json.dumps({"logs": logs}, indent=2) + "\n"

    @classmethod
    def parse(cls, text: str) -> WitnessState:
        """A state as ``serialize`` wrote it; NoteFormatError for anything else."""
        try:
            logs = json.loads(text)["logs"]
            return cls({origin: _log_state(entry) for origin, entry in logs.items()})
        except (ValueError, LookupError, TypeError, AttributeError) as error:
            raise NoteFormatError(f"a witness state is not as Coffre writes it: {error}") from None


def _log_state(entry: dict[str, Any]) -> LogState:
    size, root, note = entry["size"], unb64(entry["root"]), entry["note"]
    if not isinstance(size, int) or not 0 <= size <= _MAX_SIZE or len(root) != HASH_SIZE:
        raise ValueError("a size is a 64-bit whole number, a root 32 bytes")
    if note is not None:
        checkpoint = Checkpoint.parse(parse_note(note).text)
        if (checkpoint.size, checkpoint.root) != (size, root):
            raise ValueError("the note kept is not of the size and root kept")
    return LogState(size, root, note)


@dataclass(frozen=True, slots=True)
class Submission:
    """An ``add-checkpoint`` request: the old size, the proof from it, the signed checkpoint."""

    old: int
    proof: tuple[bytes, ...]
    note: Note

    def serialize(self) -> str:
        lines = [f"old {self.old}", *(b64(h) for h in self.proof)]
        return "".join(line + "\n" for line in lines) + "\n" + self.note.serialize()

    @classmethod
    def parse(cls, body: bytes) -> Submission:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise MalformedRequest("the request body is not UTF-8") from None
        header, blank, rest = text.partition("\n\n")
        lines = header.split("\n")
        found = _OLD.fullmatch(lines[0])
        if not blank or found is None or int(found[1]) > _MAX_SIZE:
            raise MalformedRequest("the body starts with 'old <size>', then a newline")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise MalformedRequest(f"a proof has at most {MAX_PROOF_LINES} lines")
        try:
            proof = tuple(unb64(line) for line in lines[1:])
            note = parse_note(rest)
        except (ValueError, NoteFormatError) as error:
            raise MalformedRequest(f"malformed request: {error}") from None
        if any(len(h) != HASH_SIZE for h in proof):
            raise MalformedRequest(f"each proof line is a {HASH_SIZE}-byte hash in base64")
        return cls(int(found[1]), proof, note)


@dataclass(frozen=True, slots=True)
class Cosigned:
    """A checkpoint the witness cosigned, and the witness's state once it did."""

    state: WitnessState
    signature: NoteSignature

    def response(self) -> str:
        """The answer's body: the cosignature line."""
        return self.signature.line()


@dataclass(frozen=True, slots=True)
class WitnessKey:
    """A witness's name and Ed25519 seed; it signs cosignature/v1 (type 0x04)."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != ED25519_SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {ED25519_SEED_BYTES} bytes")
        _ = self.verifier_key  # a name a verifier key can carry

    @classmethod
    def generate(cls, name: str) -> WitnessKey:
        return cls(name, secrets.token_bytes(ED25519_SEED_BYTES))

    def signer(self) -> Ed25519Signer:
        return Ed25519Signer(self.seed)

    @property
    def verifier_key(self) -> VerifierKey:
        return VerifierKey(self.name, ALG_COSIGNATURE_V1, self.signer().public_key)

    def serialize(self) -> str:
        return json.dumps({"name": self.name, "ed25519_seed": b64(self.seed)}) + "\n"

    @classmethod
    def parse(cls, text: str) -> WitnessKey:
        try:
            fields = json.loads(text)
            return cls(fields["name"], unb64(fields["ed25519_seed"]))
        except (ValueError, LookupError, TypeError) as error:
            raise NoteFormatError(f"not a witness key file: {error}") from None


def parse_witness_key(vkey: str) -> VerifierKey:
    """A witness's verifier key, which must be of type cosignature/v1 (0x04)."""
    key = VerifierKey.parse(vkey)
    if key.alg != ALG_COSIGNATURE_V1:
        raise NoteFormatError(f"{key.name}'s key is not a witness's (cosignature/v1) key")
    return key


def check_quorum(quorum: int | None, witnesses: int) -> int:
    """How many of ``witnesses`` must cosign: from 1 to all of them; None means all."""
    if quorum is None:
        return witnesses
    if not 1 <= quorum <= witnesses:
        raise ValueError(
            f"a quorum of {witnesses} witnesses is from 1 to {witnesses}, not {quorum}"
        )
    return quorum


class Witness:
    """The add-checkpoint decision of one witness, for the logs it follows."""

    def __init__(self, key: WitnessKey, logs: Sequence[VerifierKey]) -> None:
        self.name = key.name
        self._signer = key.signer()
        self.verifier_key = key.verifier_key
        self._logs: dict[str, list[VerifierKey]] = {}
        for log_key in logs:
            if log_key.alg != ALG_ED25519:
                raise ValueError(f"{log_key.name}'s key is not an Ed25519 log key")
            self._logs.setdefault(log_key.name, []).append(log_key)

    def add_checkpoint(self, state: WitnessState, body: bytes, timestamp: int) -> Cosigned:
        """Check a submission against ``state`` and cosign it as of ``timestamp``.

        Raises the ``WitnessRefusal`` that says which check failed, in the spec's order.
        """
        submission = Submission.parse(body)
        note = submission.note
        checkpoint = self._signed_checkpoint(note)
        old, new = submission.old, checkpoint.size
        if old > new:
            raise MalformedRequest(f"old size {old} is beyond the checkpoint's size {new}")
        cosigned = state.get(checkpoint.origin)
        if old != cosigned.size:
            raise SizeConflict(old, cosigned.size)
        if old == new and checkpoint.root != cosigned.root:
            message = f"size {new} was cosigned with another root"
            raise RootConflict(message, _evidence(body, note, cosigned))
        try:
            verify_consistency(old, new, submission.proof, cosigned.root, checkpoint.root)
        except LedgerError as error:
            message = f"inconsistent with the size {old} cosigned: {error}"
            raise InconsistentProof(message, _evidence(body, note, cosigned)) from None
        signature = cosign_note(note.text, self.name, self._signer, timestamp)
        kept = LogState(new, checkpoint.root, note.serialize())
        return Cosigned(state.with_log(checkpoint.origin, kept), signature)

    def _signed_checkpoint(self, note: Note) -> Checkpoint:
        """The checkpoint of ``note``, once its log is one the witness follows and the
        log's key signed it."""
        try:
            checkpoint = Checkpoint.parse(note.text)
        except NoteFormatError as error:
            raise MalformedRequest(f"not a checkpoint: {error}") from None
        keys = self._logs.get(checkpoint.origin)
        if keys is None:
            raise UnknownLog("this witness follows no log of that origin")
        try:
            verify_note(note, keys)
        except SignatureError as error:
            raise UntrustedSignature(str(error)) from None
        return checkpoint

    def accept_rollback(
        self, state: WitnessState, note: Note, size: int
    ) -> tuple[WitnessState, Evidence]:
        """The state that follows a log's deliberate rollback (a restore of an older
        backup, which its owner announced): from the restored log's checkpoint ``note``,
        of ``size`` exactly, smaller than the one cosigned. Returns the new state and the
        evidence of the history abandoned; WitnessRefusal for anything else (the size not
        the checkpoint's, no rollback, another log's signature)."""
        checkpoint = self._signed_checkpoint(note)
        if checkpoint.size != size:
            raise MalformedRequest(
                f"the checkpoint is of size {checkpoint.size}, not {size}: give the size the"
                " log's owner announced, and the checkpoint of that size"
            )
        cosigned = state.get(checkpoint.origin)
        if cosigned.size <= size:
            raise MalformedRequest(
                f"the witness cosigned size {cosigned.size} of this log, not beyond {size}:"
                " there is no rollback to accept (the log submits the rest as usual)"
            )
        self._check_same_log(cosigned, checkpoint.origin)
        evidence = Evidence(
            f"{cosigned.note}\n{note.serialize()}",  # one file per history abandoned
            f"rollback accepted to size {size}, abandoning the history cosigned up to size"
            f" {cosigned.size}\nlatest checkpoint cosigned before:\n{cosigned.note or '(none)'}\n"
            f"restored checkpoint accepted:\n{note.serialize()}",
        )
        kept = LogState(size, checkpoint.root, note.serialize())
        return state.with_log(checkpoint.origin, kept), evidence

    def _check_same_log(self, cosigned: LogState, origin: str) -> None:
        """A refusal unless the key given now signed the history the witness cosigned: a
        rollback announced under another key of the same name would move it to another
        log."""
        try:
            verify_note(parse_note(cosigned.note or ""), self._logs[origin])
        except LedgerError:
            raise UntrustedSignature(
                f"the key given for {origin} did not sign the checkpoint of size"
                f" {cosigned.size} the witness cosigned: the rollback must be announced under"
                " the log's own key"
            ) from None


def _evidence(body: bytes, note: Note, cosigned: LogState) -> Evidence:
    return Evidence(
        note.serialize(),
        f"refused submission:\n{body.decode()}\n"
        f"latest checkpoint cosigned before:\n{cosigned.note or '(none)'}",
    )
