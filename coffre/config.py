"""Every setting of Coffre in one registry: name, environment variable, default, help.

``docs/operations.md`` lists them all (a test checks), and the CLI reads its defaults here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from coffre.exceptions import CoffreError


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str
    help: str
    choices: tuple[str, ...] = ()
    """The values it takes, as the documentation spells them (any case is taken), if only
    some: a typo is refused, never read as one."""
    whole: bool = False
    """It takes a whole number (or nothing, where nothing is its default)."""
    url: str = ""
    """``"url"``: it takes an http(s) URL, ``"origin"``: one of a scheme and host only
    (or nothing, for both)."""

    @property
    def env(self) -> str:
        return "COFFRE_" + self.name.upper()

    def value(self) -> str:
        raw = os.environ.get(self.env, self.default)
        if self.choices and raw.upper() not in {choice.upper() for choice in self.choices}:
            raise CoffreError(f"{self.env}={raw!r}: it takes {self._choices_shown()}")
        if self.whole and not (raw.isascii() and raw.isdigit()) and (raw or self.default):
            raise CoffreError(f"{self.env}={raw!r}: it takes a whole number")
        if self.url and raw:
            _check_url(self.env, raw, origin=self.url == "origin")
        return raw

    def _choices_shown(self) -> str:
        """The values it takes as the documentation spells them: ``'open' (any case), or
        nothing``."""
        named = [repr(choice) for choice in self.choices if choice]
        shown = " or ".join(named)
        if any(choice.upper() != choice.lower() for choice in self.choices):
            shown += " (any case)"
        return shown + (", or nothing" if "" in self.choices else "")


def _check_url(env: str, raw: str, *, origin: bool) -> None:
    example = "https://fhir.example.org" if origin else "https://gateway.example.org/notices"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 (a port that is no number raises here)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in raw)
    ):
        raise CoffreError(f"{env}={raw!r}: it takes an http or https URL such as {example}")
    if origin and (parts.path.strip("/") or parts.query or parts.fragment or parts.username):
        raise CoffreError(
            f"{env}={raw!r}: it takes a scheme and a host (and a port) only, such as {example}:"
            " Coffre serves /fhir and /auth at its root"
        )


VAULT = Setting(
    "vault",
    "vault",
    "Folder of the vault: the storage file, and the keyring unless placed elsewhere.",
)
KEYRING = Setting(
    "keyring", "", "Path of the keyring file; default: keyring.json inside the vault folder."
)
CUSTODY = Setting(
    "custody",
    "keyring",
    "Where the vault's keys live: `keyring` (a file, the embedded default) or `pkcs11` (a"
    " PKCS#11 token: an HSM, or SoftHSM2).",
)
PKCS11_MODULE = Setting(
    "pkcs11_module", "", "With pkcs11 custody: path of the token's PKCS#11 library."
)
PKCS11_TOKEN = Setting("pkcs11_token", "coffre", "With pkcs11 custody: label of the token.")
PKCS11_PIN_FILE = Setting(
    "pkcs11_pin_file", "", "With pkcs11 custody: a file (mode 0600) holding the user PIN."
)
PKCS11_PIN = Setting(
    "pkcs11_pin",
    "",
    "With pkcs11 custody and no PIN file: the user PIN itself. Prefer the file.",
)
HOST = Setting("host", "127.0.0.1", "Address `coffre serve` listens on.")
PORT = Setting("port", "8080", "Port `coffre serve` listens on.", whole=True)
WORKERS = Setting("workers", "2", "Server processes; each opens the vault itself.", whole=True)
TLS_CERT = Setting(
    "tls_cert",
    "",
    "`coffre serve` speaks HTTPS (TLS 1.2 or later only) with this PEM certificate chain;"
    " empty: plain HTTP, for a TLS-terminating proxy on the same host.",
)
TLS_KEY = Setting(
    "tls_key", "", "The private key (PEM) of the TLS certificate; empty: it is in that file."
)
DATA_KEY_CACHE = Setting(
    "data_key_cache",
    "100000",
    "Data keys each server process keeps unwrapped (least recently used dropped beyond it;"
    " about 200 bytes each).",
    whole=True,
)
MAX_BODY_BYTES = Setting(
    "max_body_bytes",
    str(64 * 1024 * 1024),
    "Largest request body accepted; larger ones get 413.",
    whole=True,
)
BOOKING_SERVING = Setting(
    "booking_serving",
    "16",
    "Booking requests ($find, $book) each server process works on at once (0 is taken as 1);"
    " more wait their turn in order of arrival.",
    whole=True,
)
BOOKING_WAITING = Setting(
    "booking_waiting",
    "2000",
    "Booking requests each server process keeps waiting their turn; the next gets a 503"
    " with Retry-After, the wait the queue's pace gives.",
    whole=True,
)
REQUEST_STALL_SECONDS = Setting(
    "request_stall_seconds",
    "30",
    "How long a connection may take to send a request's headers whole, and its body may"
    " pause, before it is closed (slow clients holding connections open); 0: never.",
    whole=True,
)
STOP_SECONDS = Setting(
    "stop_seconds",
    "30",
    "How long `coffre serve`, asked to stop (SIGTERM, Ctrl-C), lets the requests under way"
    " finish before it ends them and exits; 0: as long as they take.",
    whole=True,
)
SQLITE_SYNCHRONOUS = Setting(
    "sqlite_synchronous",
    "FULL",
    "SQLite's synchronous pragma. FULL makes every acknowledged write survive a power cut;"
    " NORMAL survives a crash of Coffre but not of the machine.",
    choices=("OFF", "NORMAL", "FULL", "EXTRA"),
)
STORAGE_URL = Setting(
    "storage_url",
    "",
    "For `coffre init`: a PostgreSQL URL (postgresql://USER@HOST/DB, never with a password)"
    " to keep the new vault's storage in; the vault folder records it. Empty: an SQLite file"
    " in the folder.",
)
STORAGE_REQUIRE_TLS = Setting(
    "storage_require_tls",
    "",
    "'1': refuse a PostgreSQL storage URL that does not ask for `sslmode=verify-full` (TLS,"
    " the server's certificate checked against `sslrootcert` and its name against the host).",
    choices=("", "1"),
)
BENCH_PLAINTEXT = Setting(
    "bench_plaintext",
    "",
    "Benchmarks only: '1' stores bodies unencrypted, to measure what sealing costs; only in a"
    " vault `coffre init` made with it set, which opens with nothing else.",
    choices=("", "1"),
)
BENCH_UNVERIFIED_READS = Setting(
    "bench_unverified_reads",
    "",
    "Benchmarks only: '1' serves reads without checking them against the log, to measure"
    " what the check costs; only in a vault made for a benchmark.",
    choices=("", "1"),
)
WITNESSES = Setting(
    "witnesses",
    "",
    "Witnesses that cosign the log's checkpoints: `URL VKEY` pairs separated by spaces"
    " (docs/witness.md).",
)
WITNESS_QUORUM = Setting(
    "witness_quorum",
    "",
    "How many witnesses must cosign a checkpoint before /ledger/checkpoint/cosigned"
    " serves it; empty: all of them.",
    whole=True,
)

AUTH = Setting(
    "auth",
    "off",
    "`required`: every /fhir request but /metadata and /.well-known needs a valid bearer"
    " token (401 otherwise); `off`: a request without one passes as an unauthenticated"
    " client. A token's scopes, compartment and care relationships are enforced either"
    " way; under `off`, a request without one is held to nothing: loopback or behind an"
    " authenticating proxy only (docs/access.md).",
    choices=("off", "required"),
)
PUBLIC_URL = Setting(
    "public_url",
    "",
    "The URL clients reach Coffre at (`https://fhir.example.org`), for token issuer and"
    " audience; empty: taken from each request.",
    url="origin",
)
ACCESS_TOKEN_SECONDS = Setting(
    "access_token_seconds",
    "300",
    "Lifetime of the access tokens Coffre issues (30 to 3600).",
    whole=True,
)
OIDC_ISSUER = Setting(
    "oidc_issuer",
    "",
    "An external OpenID Connect issuer whose tokens Coffre accepts beside its own (its `iss`).",
)
OIDC_JWKS_URL = Setting(
    "oidc_jwks_url",
    "",
    "With an external issuer: the URL of its JWKS (its signing keys).",
    url="url",
)
OIDC_AUDIENCE = Setting(
    "oidc_audience",
    "",
    "With an external issuer: the `aud` its tokens must carry; empty: the FHIR base URL.",
)
NOTICE_WEBHOOK = Setting(
    "notice_webhook",
    "",
    'A URL Coffre posts `{"event": "access-notice", "notice": "Communication/<id>"}` to when a'
    " professional first opens a patient's record (an e-mail or SMS gateway); no health data."
    " Empty: the notice is only in the portal.",
    url="url",
)
METRICS = Setting(
    "metrics",
    "",
    "`open`: anyone who reaches the server may read /metrics; empty: under `COFFRE_AUTH=off`"
    " anyone may, under `required` only the bearer of `COFFRE_METRICS_TOKEN_FILE`'s token"
    " (docs/operations.md#metrics).",
    choices=("", "open"),
)
METRICS_TOKEN_FILE = Setting(
    "metrics_token_file",
    "",
    "A file (mode 0600) holding the bearer token a scraper must send to read /metrics, 32"
    " characters at least; whatever `COFFRE_AUTH` says.",
)
METRICS_DIR = Setting(
    "metrics_dir",
    "",
    "The folder where the server processes of `coffre serve --workers N` write their"
    " metrics, emptied at start; empty: a new temporary folder, removed when it stops.",
)

SETTINGS = (
    VAULT,
    KEYRING,
    CUSTODY,
    PKCS11_MODULE,
    PKCS11_TOKEN,
    PKCS11_PIN_FILE,
    PKCS11_PIN,
    HOST,
    PORT,
    WORKERS,
    TLS_CERT,
    TLS_KEY,
    DATA_KEY_CACHE,
    MAX_BODY_BYTES,
    BOOKING_SERVING,
    BOOKING_WAITING,
    REQUEST_STALL_SECONDS,
    STOP_SECONDS,
    SQLITE_SYNCHRONOUS,
    STORAGE_URL,
    STORAGE_REQUIRE_TLS,
    BENCH_PLAINTEXT,
    BENCH_UNVERIFIED_READS,
    WITNESSES,
    WITNESS_QUORUM,
    AUTH,
    PUBLIC_URL,
    ACCESS_TOKEN_SECONDS,
    OIDC_ISSUER,
    OIDC_JWKS_URL,
    OIDC_AUDIENCE,
    NOTICE_WEBHOOK,
    METRICS,
    METRICS_TOKEN_FILE,
    METRICS_DIR,
)


def check_all() -> None:
    """Refuse, before anything starts, a setting whose value it does not take."""
    for setting in SETTINGS:
        setting.value()
