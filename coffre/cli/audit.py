"""``coffre audit``: an auditor's check of a running Coffre's log, over HTTP.

The auditor holds two things the host cannot forge: the log's verifier key, given by the
vault's owner (``coffre ledger-key``), and the last checkpoint it accepted, in its own
state file. Each run fetches the newest checkpoint and checks, in order:

1. its signature, with the verifier key: otherwise **bad signature**;
2. that it is not smaller than the accepted one: otherwise **shrunk log**;
3. a consistency proof from the accepted checkpoint to it (RFC 9162 §2.1.4.2). One that
   leads to the signed root and, from its first leaves, to another root than the accepted
   one proves a fork: **inconsistent** (the log rewrote what it had signed, or shows
   another history). One that does not even lead to the signed root (garbled, too short,
   too long) is a **bad proof**: the log signed both checkpoints and cannot show that one
   extends the other, but which of a fork or a proof the host garbled, only the leaves
   tell (``--full``);
4. with ``--full``, every leaf: their root must be the signed one (**root mismatch**),
   each must decode as a leaf (**malformed leaf**), and each record's latest write among
   them must give the map root the checkpoint signs (**map mismatch**: the map would
   prove as a record's latest a write that is not, or hide one). Consistency is then
   checked on the leaves themselves, not on the server's proof: their first ``M`` must
   give the accepted checkpoint's root (**inconsistent** otherwise). A proof the server
   serves that does not verify is only a finding: the server's stored tree is damaged,
   the history it signed is not. Leaves the server does not serve (**missing leaves**),
   or that do not give the signed root, are a violation whatever the proof endpoint
   answers after.

A violation is backed by something the log signed, or by what the log served against
it (leaves, a proof), so the verdict does not depend on trusting the network beyond the
server's answers being its own (use https). Exit status: 0 when every check holds (the new
checkpoint is then saved to the state file), 1 on a violation, 2 when no verdict could be
reached (the server is unreachable, answers with an error, with something that is not a
proof, or with an answer too large or too slow to be one).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from coffre import config
from coffre.api.auth.authority import FHIR_BASE_PATH
from coffre.cli.leaves import MAX_BODY, Unanswered, bundle_checks, diagnostics
from coffre.cli.output import fail
from coffre.exceptions import CoffreError
from coffre.files import replace_file
from coffre.ledger import (
    Checkpoint,
    ForkError,
    LedgerError,
    ProofShapeError,
    SparseMerkleMap,
    VerifierKey,
    open_checkpoint,
    verify_consistency,
)
from coffre.ledger.leaf import LeafKind
from coffre.ledger.note import b64
from coffre.ledger.tiles import (
    TILE_WIDTH,
    TileId,
    bundle_roots,
    entry_bundles,
    root_from_bundles,
    split_bundle,
)
from coffre.ledger.witness import check_quorum, parse_witness_key
from coffre.service import Vault

if TYPE_CHECKING:
    import httpx

EXIT_VIOLATION, EXIT_NO_VERDICT = 1, 2
MALFORMED_SHOWN = 10
TIMEOUT_SECONDS = 30.0
MAX_ANSWER_BYTES = 64 * 1024
"""The most a checkpoint (with a hundred cosignatures) or a consistency proof can take."""

out = Console(soft_wrap=True, highlight=False)


class NoVerdict(CoffreError):
    """No verdict: the server answered with an error, or with something that is no proof."""


@dataclass(frozen=True, slots=True)
class Violation:
    """Something the log signed or served that contradicts what it signed before."""

    kind: str
    detail: str


@dataclass
class Report:
    """What one audit found: the checks that held, the violations, the new checkpoint."""

    note: str | None = None
    checkpoint: Checkpoint | None = None
    held: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    """What the log itself records that an auditor must hear of, the log being sound:
    integrity failures the gateway caught (the host served something it did not write)."""

    @property
    def consistent(self) -> bool:
        return self.checkpoint is not None and not self.violations

    def violate(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, detail))


def audit_log(
    client: httpx.Client,
    key: VerifierKey,
    accepted: Checkpoint | None,
    full: bool = False,
    witnesses: Sequence[VerifierKey] = (),
    quorum: int = 0,
    processes: int = 0,
) -> Report:
    """Audit the log that ``client`` (based at the server's root) serves; with
    ``witnesses``, its newest checkpoint that ``quorum`` of them cosigned.

    With ``full`` and ``processes`` above 1, a large log's leaves are fetched and checked
    by that many processes, from ``client``'s base URL (which must then be the server's).
    Raises ``NoVerdict`` when the server gives no usable answer, and lets httpx's
    transport errors through.
    """
    report = Report()
    body = _get(client, "/ledger/checkpoint/cosigned" if witnesses else "/ledger/checkpoint")
    try:
        checkpoint = open_checkpoint(body, key)
    except LedgerError as error:
        report.violate("bad signature", f"the checkpoint served is not signed by {key}: {error}")
        return report
    note = body.decode()  # it opened: UTF-8
    report.note, report.checkpoint = note, checkpoint
    report.held.append(
        f"checkpoint signed by {key.name}: size {checkpoint.size}, root {b64(checkpoint.root)}"
    )
    if witnesses and not _check_witnesses(note, key, witnesses, quorum, report):
        return report
    if accepted is None:
        report.held.append("no checkpoint accepted before: this one becomes the reference")
    elif checkpoint.size < accepted.size:
        report.violate(
            "shrunk log",
            f"the log now signs size {checkpoint.size}, below the size {accepted.size}"
            " it signed before",
        )
        accepted = None  # nothing more to check it against
    roots = _check_leaves(client, checkpoint, report, processes) if full else None
    if accepted is not None and roots is not None:  # every leaf, as signed: no proof needed
        _check_consistency_on_leaves(client, accepted, checkpoint, roots, report)
    elif accepted is not None:
        _check_consistency_unless_unanswered(client, accepted, checkpoint, report)
    return report


def _check_consistency_unless_unanswered(
    client: httpx.Client, accepted: Checkpoint, checkpoint: Checkpoint, report: Report
) -> None:
    """The proof's check, once the leaves gave a violation: a server that gives no proof
    then (a damaged log often cannot) leaves that verdict as it is, not no verdict."""
    import httpx

    try:
        _check_consistency(client, accepted, checkpoint, report)
    except (NoVerdict, httpx.HTTPError) as error:
        if not report.violations:
            raise
        report.findings.append(
            f"consistency with the checkpoint of size {accepted.size} accepted before is not"
            f" checked: {error}"
        )


def _check_witnesses(
    note: str, key: VerifierKey, witnesses: Sequence[VerifierKey], quorum: int, report: Report
) -> bool:
    """Whether ``quorum`` of ``witnesses`` cosigned the checkpoint: only then do they vouch
    that it is the one history they all saw."""
    try:
        open_checkpoint(note, key, witnesses, quorum)
    except LedgerError as error:
        report.violate(
            "unwitnessed",
            f"the checkpoint is not cosigned by {quorum} of the {len(witnesses)} witnesses"
            f" given, so it may be a history they never saw: {error}",
        )
        return False
    report.held.append(f"cosigned by at least {quorum} of the {len(witnesses)} witnesses given")
    return True


def _check_consistency(
    client: httpx.Client, accepted: Checkpoint, checkpoint: Checkpoint, report: Report
) -> None:
    if checkpoint.size == accepted.size and checkpoint.root != accepted.root:
        # Both signed: the fork needs no proof, and the host cannot withhold one.
        report.violate(
            "inconsistent",
            f"the log signed size {checkpoint.size} with another root"
            f" ({b64(checkpoint.root)}) than the checkpoint accepted before"
            f" ({b64(accepted.root)}): two histories",
        )
        return
    error = _proof_fails(client, accepted, checkpoint)
    if isinstance(error, ForkError):
        report.violate(
            "inconsistent",
            f"the checkpoint of size {checkpoint.size} is inconsistent with the checkpoint"
            f" of size {accepted.size} accepted before: the server's proof leads to the"
            f" signed root, and from its first {accepted.size} leaves to another root than"
            f" the accepted one ({error}): two histories",
        )
    elif error is not None:
        report.violate(
            "bad proof",
            f"the server signed sizes {accepted.size} and {checkpoint.size}, and its"
            f" consistency proof between them does not verify ({error}): the log cannot"
            f" show that it extends the checkpoint of size {accepted.size} accepted before;"
            " the host garbled the proof, or the log forked (--full tells which)",
        )
    else:
        report.held.append(
            f"consistent with the checkpoint of size {accepted.size} accepted before"
        )


def _proof_fails(
    client: httpx.Client, accepted: Checkpoint, checkpoint: Checkpoint
) -> LedgerError | None:
    """Why the server's consistency proof from ``accepted`` to ``checkpoint`` does not
    verify (``ForkError``: it proves the log forked), or None when it does. NoVerdict
    when the server answers no proof at all."""
    try:
        proof: list[bytes] = []  # from the empty tree, or to the same one, a proof is empty
        if accepted.size not in (0, checkpoint.size):
            params = {"old": accepted.size, "new": checkpoint.size}
            answer = _json(
                "/ledger/proof/consistency", _get(client, "/ledger/proof/consistency", params)
            )
            proof = _proof_hashes(answer.get("proof"))
        verify_consistency(accepted.size, checkpoint.size, proof, accepted.root, checkpoint.root)
    except LedgerError as error:
        return error
    return None


def _check_consistency_on_leaves(
    client: httpx.Client,
    accepted: Checkpoint,
    checkpoint: Checkpoint,
    roots: Sequence[Sequence[bytes]],
    report: Report,
) -> None:
    """Whether the first ``accepted.size`` of the leaves fetched, which gave the signed
    root (their bundles' ``roots``), give the accepted root: then the log extends the
    checkpoint accepted before, whatever proof the server serves. Its proof is still
    checked: one that fails is reported as a finding, a damaged stored tree, not a fork."""
    old_root = _root_of_first(client, accepted.size, entry_bundles(checkpoint.size), roots)
    if old_root != accepted.root:
        report.violate(
            "inconsistent",
            f"the checkpoint of size {checkpoint.size} is inconsistent with the checkpoint"
            f" of size {accepted.size} accepted before: the first {accepted.size} of the"
            f" leaves that give its root give {b64(old_root)}, not {b64(accepted.root)}:"
            " two histories",
        )
        return
    report.held.append(
        f"consistent with the checkpoint of size {accepted.size} accepted before: its root"
        " recomputed from the leaves"
    )
    try:
        error: Exception | None = _proof_fails(client, accepted, checkpoint)
    except NoVerdict as unanswered:
        error = unanswered
    if error is not None:
        report.findings.append(
            f"the server's consistency proof from size {accepted.size} to {checkpoint.size}"
            f" does not hold ({error}), though its leaves show the log consistent: its stored"
            " tree is damaged (the host altered it, or the proof), and auditors without"
            " --full find a bad proof"
        )


def _root_of_first(
    client: httpx.Client, size: int, tiles: Sequence[TileId], roots: Sequence[Sequence[bytes]]
) -> bytes:
    """The root of the first ``size`` leaves, from the roots of the bundles (``tiles``)
    before them and the leaves of the one they end in, fetched again: that bundle must
    give the same roots as when first fetched, so they are the same leaves."""
    full, rest = divmod(size, TILE_WIDTH)
    if not rest:
        return root_from_bundles(size, roots[:full])
    tile = tiles[full]
    try:
        entries = split_bundle(_get(client, f"/ledger/{tile.path()}", limit=MAX_BODY))
    except LedgerError as error:
        raise NoVerdict(f"{tile.path()} is not an entry bundle: {error}") from None
    if bundle_roots(entries) != roots[full]:
        raise NoVerdict(f"{tile.path()} was served with other leaves the second time")
    return root_from_bundles(size, [*roots[:full], bundle_roots(entries[:rest])])


def _check_leaves(
    client: httpx.Client, checkpoint: Checkpoint, report: Report, processes: int
) -> list[list[bytes]] | None:
    """Fetch every entry bundle the checkpoint covers, recompute its root from their
    leaves, decode each (``coffre.cli.leaves``). The roots of the bundles' perfect
    subtrees, when their leaves give the signed root."""
    tiles = entry_bundles(checkpoint.size)
    roots: list[list[bytes]] = []
    malformed, shown = 0, list[str]()
    kinds: Counter[int] = Counter()
    integrity: list[int] = []
    latest_writes: dict[bytes, bytes] = {}
    with bundle_checks(
        tiles,
        lambda path: _get(client, f"/ledger/{path}", limit=MAX_BODY),
        str(client.base_url),
        processes,
        _seconds(client),
    ) as checks:
        try:
            for tile, check in zip(tiles, checks, strict=True):
                malformed, shown = malformed + check.malformed, shown + check.shown
                kinds.update(check.kinds)
                integrity += check.integrity
                latest_writes.update(check.map_updates)
                if check.served < tile.width:
                    served = tile.index * TILE_WIDTH + check.served
                    report.violate(
                        "missing leaves",
                        f"the log serves no leaf {served}, though its checkpoint covers"
                        f" {checkpoint.size}",
                    )
                    return None
                roots.append(check.roots)
        except Unanswered as error:
            raise NoVerdict(str(error)) from None
    root = root_from_bundles(checkpoint.size, roots)
    if root != checkpoint.root:
        report.violate(
            "root mismatch",
            f"the {checkpoint.size} leaves served recompute to root {b64(root)},"
            f" not the signed {b64(checkpoint.root)}",
        )
    else:
        report.held.append(f"the {checkpoint.size} leaves recompute to the signed root")
        _check_map(checkpoint, latest_writes, report)
    for detail in shown[:MALFORMED_SHOWN]:
        report.violate("malformed leaf", detail)
    if malformed > MALFORMED_SHOWN:
        report.violate("malformed leaf", f"... and {malformed - MALFORMED_SHOWN} more")
    if not malformed:
        report.held.append("every leaf decodes")
    _report_kinds(kinds, integrity, report)
    return roots if root == checkpoint.root else None


def _check_map(checkpoint: Checkpoint, latest_writes: dict[bytes, bytes], report: Report) -> None:
    """The map of each record's latest write among the leaves the checkpoint signs must
    have the root it signs: otherwise a map proof would vouch for a write that is not the
    record's latest, or for a record's absence."""
    if checkpoint.map_root is None:
        report.held.append("the checkpoint signs no map root: none to check")
        return
    root = SparseMerkleMap().update(latest_writes)
    if root != checkpoint.map_root:
        report.violate(
            "map mismatch",
            f"the latest writes of {len(latest_writes):,} records among the leaves give the"
            f" map root {b64(root)}, not the signed {b64(checkpoint.map_root)}",
        )
    else:
        report.held.append(
            f"the latest writes of {len(latest_writes):,} records give the signed map root"
        )


def _report_kinds(kinds: Counter[int], integrity: list[int], report: Report) -> None:
    """What the leaves record, by kind; and, as a finding, the integrity failures."""
    listed = ", ".join(f"{n:,} {LeafKind(kind).name.lower()}" for kind, n in sorted(kinds.items()))
    report.held.append(f"leaves by kind: {listed or 'none'}")
    failures = kinds[LeafKind.INTEGRITY]
    if failures:
        shown = integrity[:MALFORMED_SHOWN]
        where = ", ".join(map(str, shown)) + (", ..." if failures > len(shown) else "")
        report.findings.append(
            f"the gateway refused {failures:,} request(s) because what the host served"
            f" failed its integrity check (leaves {where}): the host altered, dropped or"
            " rolled back data; the AuditEvents of those leaves say which records"
        )


def _get(
    client: httpx.Client,
    path: str,
    params: dict[str, int] | None = None,
    limit: int = MAX_ANSWER_BYTES,
) -> bytes:
    """The body of a 200 answer to ``GET path``. NoVerdict for another status, a body of
    more than ``limit`` bytes once decoded (an endless one, a gzip bomb), or an answer
    not whole within the client's read timeout (a host that trickles it byte by byte)."""
    seconds = _seconds(client)
    deadline = time.monotonic() + seconds
    late = NoVerdict(f"GET {path} took over {seconds:g} s to answer")
    body = bytearray()
    with alarm(seconds, late), client.stream("GET", path, params=params) as response:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise NoVerdict(f"GET {path} answered more than {limit:,} bytes")
            if time.monotonic() > deadline:
                raise late
    if response.status_code != 200:
        why = diagnostics(bytes(body))
        raise NoVerdict(f"GET {path} answered HTTP {response.status_code}{why}")
    return bytes(body)


@contextmanager
def alarm(seconds: float, late: Exception) -> Iterator[None]:
    """Raise ``late`` after ``seconds`` in the block: the only bound on an answer's headers,
    which a host can send a byte at a time, each within the socket's timeout. A signal, so
    in the main thread only (the command's); elsewhere only the body is bounded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise late

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _seconds(client: httpx.Client) -> float:
    """How long an answer may take to arrive whole: the client's read timeout."""
    return client.timeout.read or TIMEOUT_SECONDS


def _json(path: str, body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # arrays nested past the recursion limit
        raise NoVerdict(f"{path} answered something other than JSON") from None
    if not isinstance(answer, dict):
        raise NoVerdict(f"{path} answered something other than a JSON object")
    return answer


def _proof_hashes(value: Any) -> list[bytes]:
    """The hashes of an answer's proof, a JSON list of base64 strings. An answer that
    holds no such list is no proof (NoVerdict); one whose strings are not base64 is a
    proof, garbled (ProofShapeError), as one whose hashes are not of 32 bytes is to
    ``verify_consistency``."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise NoVerdict("the answer's proof is not a list of strings")
    try:
        return [base64.b64decode(item, validate=True) for item in value]
    except (binascii.Error, ValueError):
        raise ProofShapeError("a hash of the proof is not base64") from None


# -- the commands ------------------------------------------------------------------------


def _stop(message: str) -> typer.Exit:
    out.print(f"[bold yellow]NO VERDICT[/bold yellow]: {escape(message)}; state left unchanged")
    return typer.Exit(code=EXIT_NO_VERDICT)


def _load_state(state: Path, key: VerifierKey) -> Checkpoint | None:
    if not state.exists():
        return None
    try:
        return open_checkpoint(state.read_text(), key)
    except (LedgerError, OSError, UnicodeError) as error:
        raise _stop(f"{state} holds no checkpoint signed by {key.name}: {error}") from None


def _save_state(state: Path, note: str) -> None:
    """Replace the state file so that a crash or a power cut leaves the old one or the new:
    an auditor that lost its state would accept again what it had seen superseded. One
    that cannot save it reaches no verdict (2), never a violation (1): a script would
    take that for tampering."""
    try:
        state.parent.mkdir(parents=True, exist_ok=True)
        replace_file(state, note)
    except OSError as error:
        raise _stop(f"the state cannot be saved to {state}: {error}") from None


def _print(report: Report) -> None:
    for line in report.held:
        out.print(f"[green]✓[/green] {escape(line)}")
    for finding in report.findings:
        out.print(f"[yellow]! finding[/yellow]: {escape(finding)}")
    for violation in report.violations:
        out.print(f"[red]✗ {escape(violation.kind)}[/red]: {escape(violation.detail)}")


def audit(
    url: Annotated[
        str,
        typer.Argument(
            help="The server's root URL, e.g. http://127.0.0.1:8080 (its /fhir base is taken too)."
        ),
    ],
    key: Annotated[
        str,
        typer.Option("--key", help="The log's verifier key, from its owner (coffre ledger-key)."),
    ],
    state: Annotated[
        Path,
        typer.Option(
            "--state",
            help="The auditor's file: the last checkpoint it accepted, kept between runs.",
        ),
    ],
    full: Annotated[
        bool, typer.Option("--full", help="Also fetch every leaf, recompute the root, decode each.")
    ] = False,
    witness: Annotated[
        list[str] | None,
        typer.Option(
            "--witness",
            help="A witness's verifier key (repeatable): audit the newest checkpoint the"
            " witnesses cosigned, accepted only with --quorum of their cosignatures.",
        ),
    ] = None,
    quorum: Annotated[
        int | None,
        typer.Option("--quorum", help="How many of the --witness keys must cosign; default: all."),
    ] = None,
) -> None:
    """Check that a running Coffre's log is signed, append-only, and (--full) matches its leaves.

    Exit 0: consistent (--state updated); 1: a violation; 2: no verdict (server unreachable).
    """
    import httpx

    try:
        verifier = VerifierKey.parse(key.strip())
    except LedgerError as error:
        raise _stop(f"--key is not a verifier key: {error}") from None
    try:
        witnesses = [parse_witness_key(vkey.strip()) for vkey in witness or []]
        required = check_quorum(quorum, len(witnesses))
    except (LedgerError, ValueError) as error:
        raise _stop(f"--witness or --quorum: {error}") from None
    accepted = _load_state(state, verifier)
    url = _server_root(url)
    try:
        with httpx.Client(base_url=url, timeout=TIMEOUT_SECONDS) as client:
            report = audit_log(
                client, verifier, accepted, full, witnesses, required, os.cpu_count() or 1
            )
    except httpx.HTTPError as error:
        raise _stop(f"server unreachable at {url}: {error}") from None
    except NoVerdict as error:
        raise _stop(f"no verdict for {url}: {error}") from None
    _print(report)
    if report.violations or report.note is None or report.checkpoint is None:
        kinds = sorted({violation.kind for violation in report.violations})
        out.print(
            f"[bold red]VIOLATION[/bold red] ({escape(', '.join(kinds))}): the log at"
            f" {escape(url)} breaks its promises; state left unchanged"
        )
        raise typer.Exit(code=EXIT_VIOLATION)
    _save_state(state, report.note)
    out.print(
        f"[bold green]CONSISTENT[/bold green]: the log at {escape(url)} holds at size"
        f" {report.checkpoint.size}; saved to {escape(str(state))}"
        + (f"; {len(report.findings)} finding(s) above" if report.findings else "")
    )


def _server_root(url: str) -> str:
    """The server's root, where /ledger is: the URL given, or the one its FHIR base (which
    Coffre always serves at ROOT/fhir, behind a proxy's path too) names."""
    given = url.rstrip("/")
    if not given.endswith(FHIR_BASE_PATH):
        return url
    root = given.removesuffix(FHIR_BASE_PATH)
    out.print(escape(f"{url} is the server's FHIR base: auditing the log at its root, {root}"))
    return root


def ledger_key(
    vault: Annotated[
        Path, typer.Option("--vault", envvar=config.VAULT.env, help=config.VAULT.help)
    ] = Path(config.VAULT.default),
    keyring: Annotated[
        Path | None,
        typer.Option("--keyring", envvar=config.KEYRING.env, help=config.KEYRING.help),
    ] = None,
) -> None:
    """Print the verifier key of a vault's log: what its auditors need (coffre audit --key)."""
    try:
        records = Vault.at(vault, keyring).open()
    except CoffreError as error:
        raise fail(error) from None
    try:
        typer.echo(str(records.ledger.verifier_key))
    finally:
        records.storage.close()
