"""The witness server: ``POST /add-checkpoint`` of c2sp.org/tlog-witness, over a folder.

The folder holds the witness's key (``witness.key``, 0600), its state (``state.json``:
the latest checkpoint it cosigned per log) and, under ``evidence/``, the log-signed
checkpoints it refused because they contradict what it cosigned before, and the
histories it abandoned when its operator accepted a log's rollback.

The state is the witness's promise: losing it, or letting two processes update it,
would let it cosign a fork. So one process serves a folder (a file lock), one request
at a time decides and updates (an asyncio lock), and the new state is on disk (temporary
file, fsync, rename, fsync of the folder) before the cosignature leaves.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from coffre.exceptions import CoffreError
from coffre.files import replace_file
from coffre.ledger import LedgerError, Note, VerifierKey
from coffre.ledger.witness import (
    SIZE_CONTENT_TYPE,
    Evidence,
    SizeConflict,
    Witness,
    WitnessKey,
    WitnessRefusal,
    WitnessState,
)

KEY_FILE = "witness.key"
STATE_FILE = "state.json"
EVIDENCE_FOLDER = "evidence"
LOCK_FILE = "witness.lock"
ROLLBACK_PREFIX = "rollback-"
"""Evidence of a rollback the witness's operator accepted, apart from refusals."""
MAX_BODY_BYTES = 64 * 1024
"""A checkpoint with a hundred signatures and 63 proof lines is well under this."""

log = logging.getLogger("coffre.witness")


class WitnessFolderError(CoffreError):
    """The witness folder is missing, damaged, already made, or served by another process."""


class WitnessFolder:
    """A witness's key, state and evidence, on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def key_file(self) -> Path:
        return self.path / KEY_FILE

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    def create(self, name: str) -> VerifierKey:
        """A new witness: a fresh key (0600) and an empty state; refuses an existing one."""
        try:
            key = WitnessKey.generate(name)
        except ValueError as error:
            raise WitnessFolderError(f"not a witness name: {error}") from None
        if self.state_file.exists():
            raise WitnessFolderError(f"a witness state already exists at {self.state_file}")
        if self.path.exists() and not self.path.is_dir():
            raise WitnessFolderError(f"{self.path} is a file, not a folder for the witness")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise WitnessFolderError(f"a witness key already exists at {self.key_file}") from None
        except OSError as error:
            raise self._cannot_make(error) from None
        try:
            with os.fdopen(fd, "w") as file:
                file.write(key.serialize())
                file.flush()
                os.fsync(file.fileno())
            self.save_state(WitnessState())
        except OSError as error:  # a full disk: no half-made witness to refuse a retry
            self.key_file.unlink(missing_ok=True)
            self.state_file.unlink(missing_ok=True)
            raise self._cannot_make(error) from None
        return key.verifier_key

    def _cannot_make(self, error: OSError) -> WitnessFolderError:
        return WitnessFolderError(f"cannot make the witness in {self.path}: {error.strerror}")

    def key(self) -> WitnessKey:
        try:
            mode = self.key_file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise WitnessFolderError(f"{self.key_file} is readable by others: chmod 600 it")
            return WitnessKey.parse(self.key_file.read_text())
        except (OSError, UnicodeError, LedgerError) as error:
            raise WitnessFolderError(f"no witness key at {self.key_file}: {error}") from None

    def load_state(self) -> WitnessState:
        """The state; a witness without one must not start afresh (see docs/witness.md)."""
        try:
            return WitnessState.parse(self.state_file.read_text())
        except (OSError, UnicodeError, LedgerError) as error:
            raise WitnessFolderError(
                f"no usable witness state at {self.state_file} ({error}); a witness that lost"
                " its state must be retired and replaced by a new one, never restarted empty"
            ) from None

    def save_state(self, state: WitnessState) -> None:
        """Replace the state so that a crash or a power cut leaves the old one or the new."""
        replace_file(self.state_file, state.serialize())

    def keep_evidence(self, evidence: Evidence, prefix: str = "") -> Path:
        """Keep ``evidence`` under its name, unless it is kept already (the same
        refusal, or the same rollback, again)."""
        folder = self.path / EVIDENCE_FOLDER
        folder.mkdir(exist_ok=True)
        path = folder / f"{prefix}{evidence.name}.txt"
        if not path.exists():
            path.write_text(evidence.text)
        return path

    def accept_rollback(self, logs: Sequence[VerifierKey], note: Note, size: int) -> Path:
        """Accept a log's announced rollback to ``size`` (``note``: its checkpoint of that
        size), while no witness process serves the folder; returns the evidence kept of
        the history abandoned."""
        with self.serving():
            state, evidence = Witness(self.key(), logs).accept_rollback(
                self.load_state(), note, size
            )
            kept = self.keep_evidence(evidence, ROLLBACK_PREFIX)
            self.save_state(state)
        return kept

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Hold the folder for this process while serving; released on leaving, even when
        the start is refused (a traceback kept alive must not keep the folder taken)."""
        if not self.path.is_dir():
            raise WitnessFolderError(
                f"no witness folder at {self.path}: make one with 'coffre witness init'"
            )
        with open(self.path / LOCK_FILE, "ab") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WitnessFolderError(f"another witness process serves {self.path}") from None
            yield


class WitnessServer:
    """One witness's add-checkpoint, with its state held in memory and on disk."""

    def __init__(
        self,
        folder: WitnessFolder,
        logs: Sequence[VerifierKey],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._folder = folder
        self._witness = Witness(folder.key(), logs)
        self._state = folder.load_state()
        self._clock = clock
        self._lock = asyncio.Lock()

    async def add_checkpoint(self, request: Request) -> Response:
        body = await _body(request)
        if body is None:
            return _text(f"a request body is at most {MAX_BODY_BYTES} bytes", 413)
        async with self._lock:
            now = self._clock()
            try:
                cosigned = self._witness.add_checkpoint(self._state, body, int(now))
            except SizeConflict as conflict:
                # Exactly this type, without the charset Starlette adds to text/*.
                headers = {"Content-Type": SIZE_CONTENT_TYPE}
                return Response(f"{conflict.size}\n", 409, headers=headers)
            except WitnessRefusal as refusal:
                if refusal.evidence is not None:
                    await self._keep(refusal, refusal.evidence)
                return _text(str(refusal), refusal.status)
            try:
                await asyncio.to_thread(self._folder.save_state, cosigned.state)
            except OSError as error:
                log.error("the witness could not save its state: %s", error)
                return _text("the witness could not save its state; nothing was cosigned", 503)
            self._state = cosigned.state
        return PlainTextResponse(cosigned.response())

    async def _keep(self, refusal: WitnessRefusal, evidence: Evidence) -> None:
        try:
            path = await asyncio.to_thread(self._folder.keep_evidence, evidence)
        except OSError as error:
            log.error("refused a checkpoint (%s) but could not keep it: %s", refusal, error)
            return
        log.error("refused a checkpoint the log signed (%s); kept in %s", refusal, path)


def witness_app(server: WitnessServer) -> Starlette:
    return Starlette(
        routes=[Route("/add-checkpoint", server.add_checkpoint, methods=["POST"])],
        exception_handlers={ClientDisconnect: _client_gone},
    )


async def _client_gone(request: Request, error: Exception) -> Response:
    """A client that hung up mid-body: nothing was decided, nobody hears the answer, and
    it is no fault of the witness to log (anyone may do it, as often as they like)."""
    return _text("the request's body did not arrive whole: send it again", 400)


async def _body(request: Request) -> bytes | None:
    """The request body, or None when it is longer than ``MAX_BODY_BYTES``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _text(message: str, status: int) -> Response:
    return PlainTextResponse(message + "\n", status)
