"""The log's side of witnessing: submit each new checkpoint to the witnesses, publish it
once enough of them cosigned it.

Every second or so, when the log has signed a checkpoint the witnesses have not yet
cosigned, it is posted to each (``add-checkpoint``, c2sp.org/tlog-witness) with a
consistency proof from the size that witness is at: a witness that answers 409 with
another size gets the proof from that size. The proof is verified against the checkpoint
before it is sent (``coffre.service.proving``): a stored tree the host altered would
otherwise have every witness take the log for a fork. Once ``quorum`` witnesses cosigned the
checkpoint, the note with their cosignatures is written to ``checkpoint.cosigned`` in
the vault folder, which ``/ledger/checkpoint/cosigned`` serves.

Witnessing never holds up the server: it runs beside the requests, a witness that is
down or refuses is logged and tried again later (waiting longer each time), and until a
quorum cosigns a newer checkpoint the older cosigned one stays published. With several
server processes, the one holding a file lock submits; the others only serve the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from coffre import config
from coffre.exceptions import CoffreError
from coffre.ledger import (
    Checkpoint,
    LedgerError,
    Note,
    SignedTree,
    VerifierKey,
    open_checkpoint,
    parse_note,
    verify_note,
)
from coffre.ledger.note import NoteSignature
from coffre.ledger.witness import (
    SIZE_CONTENT_TYPE,
    Submission,
    check_quorum,
    parse_witness_key,
)
from coffre.service.background import in_background
from coffre.service.records import RecordStore

COSIGNED_FILE = "checkpoint.cosigned"
LOCK_FILE = "witnessing.lock"
INTERVAL_SECONDS = 1.0
TIMEOUT_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 60.0
MAX_ANSWER_BYTES = 64 * 1024
"""Far more than a witness's answer takes: a cosignature line, or a size."""

_TOLD_SIZE = re.compile(r"(0|[1-9][0-9]{0,19})\n", re.ASCII)
"""A 409's size: ASCII digits only (``str.isdigit`` takes "²", which ``int`` refuses)."""

log = logging.getLogger("coffre.witnessing")


class WitnessConfigError(CoffreError):
    """The witnesses or the quorum in the settings cannot be used."""


@dataclass(frozen=True, slots=True)
class WitnessEndpoint:
    """A witness the log submits to: where, and the key its cosignatures verify with."""

    url: str
    key: VerifierKey


def parse_witnesses(text: str) -> list[WitnessEndpoint]:
    """``URL VKEY`` pairs separated by white space, as ``COFFRE_WITNESSES`` holds them."""
    words = text.split()
    if len(words) % 2:
        raise WitnessConfigError("witnesses are pairs of a URL and a verifier key")
    witnesses = []
    for url, vkey in zip(words[::2], words[1::2], strict=True):
        if not url.startswith(("http://", "https://")):
            raise WitnessConfigError(f"a witness URL starts with http:// or https://: {url!r}")
        try:
            key = parse_witness_key(vkey)
        except LedgerError as error:
            raise WitnessConfigError(f"{vkey!r} is not a witness's key: {error}") from None
        witnesses.append(WitnessEndpoint(url.rstrip("/"), key))
    if len({w.key for w in witnesses}) != len(witnesses):
        raise WitnessConfigError("a witness is given twice")
    return witnesses


def witnesses_from_settings() -> tuple[list[WitnessEndpoint], int]:
    """The witnesses and the quorum the settings give; raises WitnessConfigError."""
    witnesses = parse_witnesses(config.WITNESSES.value())
    quorum = config.WITNESS_QUORUM.value()  # a whole number or nothing, the setting says
    try:
        return witnesses, check_quorum(int(quorum) if quorum else None, len(witnesses))
    except ValueError as error:
        raise WitnessConfigError(f"{config.WITNESS_QUORUM.env}: {error}") from None


@dataclass
class _Progress:
    """What the log knows of one witness: the size it is at (as far as the log knows), its
    cosignature of the latest checkpoint it cosigned, and when to try it again."""

    size: int = 0
    text: str | None = None
    signature: NoteSignature | None = None
    failures: int = 0
    retry_at: float = 0.0


class Witnessing:
    """Submits the log's checkpoints to ``witnesses`` and publishes them cosigned."""

    def __init__(
        self,
        records: RecordStore,
        witnesses: Sequence[WitnessEndpoint],
        quorum: int,
        folder: Path,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not witnesses or not 1 <= quorum <= len(witnesses):
            raise WitnessConfigError("witnessing needs witnesses and a quorum of 1 to all")
        self._records = records
        self._witnesses = list(witnesses)
        self._quorum = quorum
        self._progress = {w: _Progress() for w in witnesses}
        self.cosigned_file = folder / COSIGNED_FILE
        self._lock_path = folder / LOCK_FILE
        self._lock: IO[bytes] | None = None
        self._transport = transport
        self._published: str | None = None  # the newest cosigned note this process knows
        self._published_size = -1
        self._read: str | None = None  # the file's text as last read

    def published(self) -> str | None:
        """The newest checkpoint a quorum of witnesses cosigned, with their cosignatures:
        the file's, which the submitting process writes, unless this process knows a
        newer one. The file is the host's: an older copy it puts back, a note that does
        not verify or a deleted file never take a witnessed auditor back (it would report
        a shrunk log)."""
        try:
            text = self.cosigned_file.read_text()
        except FileNotFoundError:
            text = None
        if text is not None and text != self._read:
            size = self._size_in_log(text)  # a storage error leaves the file to read again
            self._read = text
            self._adopt(text, size)
        return self._published

    def _size_in_log(self, text: str) -> int:
        """The size of the checkpoint a cosigned note signs; -1 for a note this log did
        not sign, or of a checkpoint the log does not hold: of the history that a restore
        went back from, which the log no longer extends."""
        key = self._records.ledger.verifier_key
        try:
            checkpoint = open_checkpoint(parse_note(text), key)
        except LedgerError:
            log.error("the storage folder's %s is no checkpoint of this log", COSIGNED_FILE)
            return -1
        held = self._records.storage.checkpoint_at(checkpoint.size)
        with contextlib.suppress(LedgerError):  # a row the log's own checks report
            if held is not None and open_checkpoint(held, key).root == checkpoint.root:
                return checkpoint.size
        log.error(
            "the storage folder's %s is of a checkpoint (size %d) this log does not hold, as"
            " after a restore that went back: not served",
            COSIGNED_FILE,
            checkpoint.size,
        )
        return -1

    def _adopt(self, note: str, size: int) -> None:
        """Serve ``note`` from now on if it is of a newer checkpoint than the one served."""
        if size > self._published_size:
            self._published, self._published_size = note, size

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Witness in the background for as long as the context lasts."""
        try:
            async with in_background(self._run()):
                yield
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, transport=self._transport) as client:
            while True:
                try:
                    if self._elected():
                        await self.round(client)
                except Exception as error:  # the next round may fare better; never stop
                    log.error("witnessing failed this round: %s: %s", type(error).__name__, error)
                await asyncio.sleep(INTERVAL_SECONDS)

    def _elected(self) -> bool:
        """Whether this process submits: it holds the lock, or takes it now."""
        if self._lock is None:
            file = open(self._lock_path, "ab")  # noqa: SIM115 - held while witnessing
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                return False
            self._lock = file
        return True

    async def round(self, client: httpx.AsyncClient) -> None:
        """Submit the latest checkpoint to the witnesses that lack it, publish it if a
        quorum cosigned it."""
        text = self._records.storage.latest_checkpoint()
        if text is None:
            return
        note = parse_note(text)
        checkpoint = open_checkpoint(note, self._records.ledger.verifier_key)
        now = time.monotonic()
        due = [w for w, p in self._progress.items() if p.text != note.text and p.retry_at <= now]
        await asyncio.gather(*(self._submit(client, w, note, checkpoint) for w in due))
        signatures = [
            p.signature
            for p in self._progress.values()
            if p.text == note.text and p.signature is not None
        ]
        if len(signatures) >= self._quorum:
            self._publish(
                Note(note.text, (*note.signatures, *signatures)).serialize(), checkpoint.size
            )

    async def _submit(
        self, client: httpx.AsyncClient, witness: WitnessEndpoint, note: Note, signed: Checkpoint
    ) -> None:
        progress, size = self._progress[witness], signed.size
        for _ in range(2):  # once more after a 409 that tells the witness's size
            if progress.size > size:
                self._failed(witness, f"is at size {progress.size}, beyond this log's {size}")
                progress.size = 0  # asked again next time: its operator may accept a rollback
                return
            try:
                proof = await asyncio.to_thread(
                    self._records.proofs.consistency,
                    SignedTree(size, signed.root),
                    progress.size,
                    size,
                )
            except LedgerError as error:
                self._failed(witness, f"gets no proof from size {progress.size}: {error}")
                return
            body = Submission(progress.size, tuple(proof), note).serialize()
            try:
                answer = await _post(client, f"{witness.url}/add-checkpoint", body)
            except _Unanswered as error:
                self._failed(witness, str(error), refused=False)
                return
            if answer.status == 200:
                self._cosigned(witness, note, size, answer.text)
                return
            told = _told_size(answer)
            if told is None:
                self._failed(
                    witness, f"refused size {size}: HTTP {answer.status} {answer.text[:200]!r}"
                )
                return
            progress.size = told
        self._failed(witness, f"keeps answering 409 (now at size {progress.size})")

    def _cosigned(self, witness: WitnessEndpoint, note: Note, size: int, answer: str) -> None:
        """Keep the witness's cosignature from its answer, once it verifies."""
        try:
            lines = parse_note(note.text + "\n" + answer).signatures
            ours = [
                s for s in lines if (s.name, s.key_id) == (witness.key.name, witness.key.key_id)
            ]
            verify_note(Note(note.text, tuple(ours)), [witness.key])
        except LedgerError as error:
            self._failed(witness, f"answered no valid cosignature: {error}")
            return
        progress = self._progress[witness]
        progress.size, progress.text, progress.signature = size, note.text, ours[0]
        progress.failures, progress.retry_at = 0, 0.0

    def _failed(self, witness: WitnessEndpoint, why: str, refused: bool = True) -> None:
        progress = self._progress[witness]
        progress.failures += 1
        wait = min(2.0**progress.failures, MAX_BACKOFF_SECONDS)
        progress.retry_at = time.monotonic() + wait
        report = log.error if refused else log.warning
        report("witness %s %s; trying again in %.0f s", witness.key.name, why, wait)

    def _publish(self, note: str, size: int) -> None:
        """Replace the published note atomically (several processes read it)."""
        if note == self._published:
            return
        descriptor, name = tempfile.mkstemp(dir=self.cosigned_file.parent, suffix=".tmp")
        with os.fdopen(descriptor, "w") as file:
            file.write(note)
        Path(name).replace(self.cosigned_file)
        self._published, self._published_size, self._read = note, size, note


class _Unanswered(CoffreError):
    """A witness gave no answer: unreachable, too slow, or too long to be one."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    media_type: str
    text: str


async def _post(client: httpx.AsyncClient, url: str, body: str) -> _Answer:
    """The witness's answer to ``body``, whole within the client's read timeout (a witness
    that trickles it never trips that timeout alone) and of at most ``MAX_ANSWER_BYTES``."""
    seconds = client.timeout.read or TIMEOUT_SECONDS
    data = bytearray()
    try:
        async with asyncio.timeout(seconds), client.stream("POST", url, content=body) as answer:
            async for chunk in answer.aiter_bytes():
                data += chunk
                if len(data) > MAX_ANSWER_BYTES:
                    raise _Unanswered(f"answered more than {MAX_ANSWER_BYTES:,} bytes")
    except httpx.HTTPError as error:
        raise _Unanswered(f"is unreachable: {error!r}") from None
    except TimeoutError:
        raise _Unanswered(f"did not answer whole within {seconds:g} s") from None
    media_type = answer.headers.get("content-type", "").split(";")[0].strip()
    return _Answer(answer.status_code, media_type, data.decode(errors="replace"))


def _told_size(answer: _Answer) -> int | None:
    """The size a 409 ``text/x.tlog.size`` answer carries, if it is one."""
    if answer.status != 409 or answer.media_type != SIZE_CONTENT_TYPE:
        return None
    found = _TOLD_SIZE.fullmatch(answer.text)
    return int(found[1]) if found else None
