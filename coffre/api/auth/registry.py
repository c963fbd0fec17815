"""Who may ask for a token: registered clients and users, in a file on the sovereign side.

The file sits beside the keyring (``keyring.access.json``), mode 0600, and never goes to
the storage host: it holds password hashes and the keys clients sign with. ``coffre
clients ...`` and ``coffre users ...`` edit it; each gateway process reads it again when
it changes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import secrets
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from coffre.api.auth.scopes import Role, ScopeSet, parse_scopes
from coffre.exceptions import CoffreError
from coffre.files import replace_file

ACCESS_SUFFIX = ".access.json"
BACKEND = "backend"
APP = "app"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_FHIR_USER = re.compile(
    r"(Patient|Practitioner|PractitionerRole|RelatedPerson|Person)/[A-Za-z0-9\-.]{1,64}"
)
# scrypt at n=2^15, r=8, p=3, one of OWASP's equivalent settings (Password Storage Cheat
# Sheet): 32 MiB, as n=2^17 with p=1 takes, in a quarter of its memory. A hash keeps its
# parameters, so one made with p=1 before still checks.
_SCRYPT = {"n": 2**15, "r": 8, "p": 3}
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class RegistryError(CoffreError):
    """A registration Coffre refuses, or a registry file it cannot read."""


class RegistryUnreadable(RegistryError):
    """The registry file cannot be read (damaged by hand, unreadable): no request's access
    can be checked until the operator mends it."""


def access_file(keyring: Path) -> Path:
    """Where a vault's registry lives: beside its keyring."""
    return keyring.with_name(keyring.stem + ACCESS_SUFFIX)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=_SCRYPT_MAXMEM, **_SCRYPT)
    n, r, p = _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"]
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
        )
    except ValueError:
        return False
    return hmac.compare_digest(computed, bytes.fromhex(digest))


# Checked against when a user name is unknown, so that the answer takes as long.
@functools.cache
def _decoy() -> str:
    """A hash no password matches, checked for an unknown user name so that refusing it
    takes as long; made at the first use, not by every command that imports this."""
    return hash_password(secrets.token_hex(16))


def _check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise RegistryError(f"a {kind} is 1 to 128 letters, digits, '.', '_', '@' or '-'")
    return name


def _check_scopes(text: str) -> str:
    scopes, unknown = parse_scopes(text)
    if unknown:
        raise RegistryError(f"not SMART scopes Coffre understands: {' '.join(unknown)}")
    if not scopes.resources and not scopes.others:
        raise RegistryError("a client needs at least one scope")
    return str(scopes)


MIN_RSA_BITS = 2048


def _pem_key(pem: bytes) -> RSAKey | ECKey | OKPKey:
    """A PEM key of an asymmetric type: never guessed into a shared secret."""
    if not pem.lstrip().startswith(b"-----BEGIN "):
        raise ValueError("not a PEM block")
    for kind in (RSAKey, ECKey, OKPKey):
        try:
            return kind.import_key(pem)
        except (JoseError, ValueError, TypeError):
            continue
    raise ValueError("a PEM block of no asymmetric key type")


def public_jwks(text: str) -> dict[str, Any]:
    """A client's public keys as a JWKS, from a JWKS, one JWK or a PEM public key.

    A private key is refused rather than stripped: whoever handed it over should know
    it has left the client."""
    try:
        with warnings.catch_warnings():  # a weak key is refused below, in a sentence
            warnings.simplefilter("ignore", SecurityWarning)
            if text.lstrip().startswith("{"):
                value = json.loads(text)
                keys = KeySet.import_key_set(value if "keys" in value else {"keys": [value]})
            else:
                keys = KeySet([_pem_key(text.encode())])
    except (JoseError, ValueError, TypeError) as error:
        raise RegistryError(f"not a public key, JWK or JWKS: {error}") from None
    if any(key.is_private for key in keys):
        raise RegistryError("that is a private key: register the client's public key only")
    if any(isinstance(key, RSAKey) and key.raw_value.key_size < MIN_RSA_BITS for key in keys):
        raise RegistryError(
            f"an RSA key of fewer than {MIN_RSA_BITS} bits is too weak to sign the client's"
            " assertions: make it 2048 bits or more, or an EC key (P-384)"
        )
    return {"keys": [key.as_dict(private=False) for key in keys]}


@dataclass(frozen=True, slots=True)
class Client:
    """A backend service (``jwks``, private_key_jwt) or a public app (``redirect_uris``,
    PKCE); ``scopes`` is the most it may be granted."""

    client_id: str
    kind: str
    scopes: str
    jwks: dict[str, Any] = field(default_factory=dict)
    redirect_uris: tuple[str, ...] = ()
    name: str = ""

    @property
    def allowed(self) -> ScopeSet:
        return parse_scopes(self.scopes)[0]

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scopes": self.scopes,
            "jwks": self.jwks,
            "redirect_uris": list(self.redirect_uris),
            "name": self.name,
        }


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    fhir_user: str
    password_hash: str

    def as_json(self) -> dict[str, Any]:
        return {"role": self.role, "fhir_user": self.fhir_user, "password": self.password_hash}


@dataclass(frozen=True, slots=True)
class Registry:
    clients: dict[str, Client] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)

    def client(self, client_id: str, kind: str) -> Client | None:
        client = self.clients.get(client_id)
        return client if client is not None and client.kind == kind else None

    def sign_in(self, username: str, password: str) -> User | None:
        """The user whose password this is, or None; as slow for an unknown name."""
        user = self.users.get(username)
        if user is None:
            check_password(password, _decoy())
            return None
        return user if check_password(password, user.password_hash) else None


def with_client(registry: Registry, client: Client) -> Registry:
    if client.client_id in registry.clients:
        raise RegistryError(f"{client.client_id} is registered already: remove it first")
    return replace(registry, clients={**registry.clients, client.client_id: client})


def without_client(registry: Registry, client_id: str) -> Registry:
    if client_id not in registry.clients:
        raise RegistryError(f"no client {client_id}")
    return replace(registry, clients={k: v for k, v in registry.clients.items() if k != client_id})


def with_user(registry: Registry, user: User) -> Registry:
    if user.username in registry.users:
        raise RegistryError(f"{user.username} exists already: remove them first")
    return replace(registry, users={**registry.users, user.username: user})


def without_user(registry: Registry, username: str) -> Registry:
    if username not in registry.users:
        raise RegistryError(f"no user {username}")
    return replace(registry, users={k: v for k, v in registry.users.items() if k != username})


def backend_client(client_id: str, key_text: str, scopes: str, name: str = "") -> Client:
    return Client(
        _check_name("client id", client_id),
        BACKEND,
        _check_scopes(scopes),
        public_jwks(key_text),
        (),
        name,
    )


_DEFAULT_PORTS = {"https": 443, "http": 80}


def origin_of(uri: str) -> str:
    """The origin a browser sends for pages at ``uri``: scheme, host in lowercase, and
    the port unless it is the scheme's own; "" for a URI no browser could be at (its
    port no number from 0 to 65535)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address, bracketed as in the URL
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    shown = "" if port is None or port == _DEFAULT_PORTS.get(parts.scheme) else f":{port}"
    return f"{parts.scheme}://{host}{shown}"


def app_client(client_id: str, redirect_uris: list[str], scopes: str, name: str = "") -> Client:
    if not redirect_uris:
        raise RegistryError("an app needs at least one redirect URI")
    for uri in redirect_uris:
        if not re.fullmatch(r"https://\S+|http://(localhost|127\.0\.0\.1)(:\d+)?(/\S*)?", uri):
            raise RegistryError(f"{uri!r}: redirect URIs are https, or http on the loopback")
        if "#" in uri:
            raise RegistryError(f"{uri!r}: a redirect URI has no fragment")
        if not origin_of(uri):
            raise RegistryError(f"{uri!r}: its port is no number from 0 to 65535")
    return Client(
        _check_name("client id", client_id),
        APP,
        _check_scopes(scopes),
        {},
        tuple(redirect_uris),
        name,
    )


def new_user(username: str, role: str, fhir_user: str, password: str) -> User:
    try:
        chosen = Role(role)
    except ValueError:
        roles = ", ".join(r for r in Role if r != Role.SYSTEM)
        raise RegistryError(f"{role!r} is not a role: {roles}") from None
    if chosen == Role.SYSTEM:
        raise RegistryError("systems are registered as backend clients, not users")
    if not _FHIR_USER.fullmatch(fhir_user):
        raise RegistryError(
            f"{fhir_user!r} is not a reference such as Patient/123 or Practitioner/abc"
        )
    if (chosen == Role.PATIENT) != fhir_user.startswith("Patient/"):
        raise RegistryError(
            "a patient's fhirUser is their Patient resource, and only a patient's is one"
        )
    if len(password) < 12:
        raise RegistryError("a password has at least 12 characters")
    return User(_check_name("user name", username), chosen, fhir_user, hash_password(password))


def _decode(data: dict[str, Any]) -> Registry:
    clients = {
        client_id: Client(
            client_id,
            entry["kind"],
            entry["scopes"],
            entry.get("jwks", {}),
            tuple(entry.get("redirect_uris", ())),
            entry.get("name", ""),
        )
        for client_id, entry in data.get("clients", {}).items()
    }
    users = {
        username: User(username, Role(entry["role"]), entry["fhir_user"], entry["password"])
        for username, entry in data.get("users", {}).items()
    }
    return Registry(clients, users)


def load(path: Path) -> Registry:
    """The registry at ``path``; an absent file is an empty registry."""
    try:
        data = json.loads(path.read_text())
        return _decode(data)
    except FileNotFoundError:
        return Registry()
    except OSError as error:
        raise RegistryUnreadable(
            f"cannot read the access registry {path}: {error.strerror}"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RegistryUnreadable(
            f"the access registry {path} is damaged: {type(error).__name__}"
        ) from None


def save(path: Path, registry: Registry) -> None:
    """Replace the file atomically (see ``replace_file``)."""
    data = {
        "clients": {cid: c.as_json() for cid, c in sorted(registry.clients.items())},
        "users": {name: u.as_json() for name, u in sorted(registry.users.items())},
    }
    replace_file(path, json.dumps(data, indent=2, sort_keys=True))


class RegistryFile:
    """The registry as a gateway reads it: again whenever the file changes."""

    def __init__(self, path: Path | None) -> None:
        """``None``: no file, an empty registry (an app built without a vault)."""
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._registry = Registry()

    def current(self) -> Registry:
        if self.path is None:
            return self._registry
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._registry = None, Registry()
            return self._registry
        if self._seen != (stat.st_mtime_ns, stat.st_size):
            self._registry = load(self.path)
            self._seen = (stat.st_mtime_ns, stat.st_size)
        return self._registry
