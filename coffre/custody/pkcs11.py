"""Keys in a PKCS#11 token (a hardware security module, or SoftHSM2): made there, never out.

One vault per token. Its objects, all private to the token's user:

| label | object | what it does |
| --- | --- | --- |
| ``coffre/kek-N`` | AES-256, sensitive, non-extractable, wrap and unwrap only | wraps data keys |
| ``coffre/root`` | 256-bit generic secret, sensitive, non-extractable, sign only | gives the root secret |
| ``coffre/log`` | Ed25519 key pair, private half sensitive and non-extractable | signs checkpoints |
| ``coffre/origin`` | data object | the name of the vault's log |

Data keys are wrapped and unwrapped by the token with CKM_AES_KEY_WRAP_PAD (RFC 5649, the
format of the keyring custody too); the unwrapped key goes back to the gateway, which
caches it by design. The storage names the wrapping key ``pkcs11:kek-N``. The active
key-encryption key is the highest N, so rotation adds ``kek-N+1`` beside the old ones and
retirement destroys an old one; every process looks the keys up again by label before
it wraps a new data key, and when it meets a key id it does not know, so that a
rotation done by another process reaches it without a restart.

The root secret is HMAC-SHA256 of a fixed label under ``coffre/root``, computed in the
token when the custodian opens and kept in the gateway's memory: the purpose keys derived
from it make a token for every location, compartment and search value of every request,
and a round trip to the token for each would bound Coffre to the token's HMAC rate. No
file holds it, and a copy of the host and of the configuration gives nothing without the
token and its PIN. The log's Ed25519 key signs in the token (CKM_EDDSA, RFC 8032).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from coffre import config
from coffre.custody.base import WrappedKey
from coffre.custody.memory import check_retirable, new_origin, next_kek_id
from coffre.exceptions import CustodyError, SealError, VaultStateError
from coffre.files import secret_text

PREFIX = "coffre/"
KEK_ID_PREFIX = "pkcs11:"
ROOT_LABEL = PREFIX + "root"
LOG_LABEL = PREFIX + "log"
ORIGIN_LABEL = PREFIX + "origin"
FIRST_KEK = "kek-1"
KEK_LABEL = re.compile(re.escape(PREFIX) + r"(kek-([0-9]+))")
ROOT_MESSAGE = b"coffre/v1/root-secret"
WRAP = Mechanism.AES_KEY_WRAP_PAD
# DER of the Ed25519 curve's object identifier, 1.3.101.112 (RFC 8410).
ED25519_PARAMS = bytes.fromhex("06032b6570")
NEEDED = (Mechanism.AES_KEY_WRAP_PAD, Mechanism.SHA256_HMAC, Mechanism.EDDSA)
# What a token answers when a wrapped key fails its integrity check (SoftHSM2: GeneralError).
NOT_UNWRAPPED = (
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.GeneralError,
    p11.FunctionFailed,
)
# What a token answers once the session it opened is of no more use.
SESSION_LOST = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.DeviceRemoved,
    p11.DeviceError,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.UserNotLoggedIn,
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
)
TOKEN_LOOKUPS = 3
TOKEN_LOOKUP_PAUSE_SECONDS = 0.2
PRIVATE_KEY = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True}
# A data key while the token works on it: a session object, gone when the call returns.
TRANSIENT_KEY = {Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}


def _kek_label(kek: str) -> str:
    return PREFIX + kek


def _failure(token: str, action: str, error: p11.PKCS11Error) -> CustodyError:
    """An actionable error that quotes neither the PIN nor any key."""
    if isinstance(error, p11.PinIncorrect):
        return CustodyError(
            f"the PIN of the PKCS#11 token '{token}' is wrong: check the file"
            f" {config.PKCS11_PIN_FILE.env} names, or {config.PKCS11_PIN.env} (the token"
            " locks after a few wrong PINs)"
        )
    if isinstance(error, p11.PinLocked):
        return CustodyError(
            f"the PKCS#11 token '{token}' is locked after wrong PINs: its security officer"
            " must unlock it"
        )
    if isinstance(error, p11.NoSuchToken):
        return CustodyError(
            f"no PKCS#11 token labelled '{token}': check {config.PKCS11_TOKEN.env}"
            " (softhsm2-util --show-slots, or the vendor's tool, lists the tokens)"
        )
    if isinstance(error, p11.NoSuchKey):
        return _no_keys(token)
    if isinstance(error, p11.MultipleTokensReturned):
        return CustodyError(
            f"several PKCS#11 tokens are labelled '{token}': give each its own label, and"
            f" {config.PKCS11_TOKEN.env} the one of this vault's"
        )
    if isinstance(error, p11.TokenNotPresent | p11.DeviceRemoved):
        return CustodyError(f"the PKCS#11 token '{token}' is not present: plug it back in")
    return CustodyError(f"the PKCS#11 token '{token}' failed to {action}: {type(error).__name__}")


def _no_keys(token: str) -> CustodyError:
    return CustodyError(
        f"the PKCS#11 token '{token}' does not hold a Coffre vault's keys, or not all of"
        f" them ({ROOT_LABEL}, {LOG_LABEL}, {ORIGIN_LABEL}, a {PREFIX}kek-N): if it held this"
        " vault's, restore the token from its backup; a new vault gets them from"
        f" 'coffre init' with {config.CUSTODY.env}=pkcs11"
    )


def _open_session(module: str, token: str, pin: str, *, afresh: bool = False) -> Any:
    """A read-write session, logged in as the token's user; ``afresh``, with the library
    initialised again first: SoftHSM2 keeps what it read of a token that went away (its
    folder moved, then restored from a backup) until then."""
    if not Path(module).is_file():
        raise CustodyError(
            f"no PKCS#11 module at '{module}': set {config.PKCS11_MODULE.env} to the token's"
            " library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"
        )
    try:
        library = pkcs11.lib(module)
    except (p11.PKCS11Error, RuntimeError, OSError):
        raise CustodyError(
            f"'{module}' is no PKCS#11 library: set {config.PKCS11_MODULE.env} to the token's"
            " (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"
        ) from None
    try:
        if afresh:
            library.reinitialize()
        found = _token_of(library, token)
        missing = set(NEEDED) - found.slot.get_mechanisms()
        if missing:
            names = ", ".join(sorted("CKM_" + mechanism.name for mechanism in missing))
            raise CustodyError(f"the PKCS#11 token '{token}' lacks {names}, which Coffre needs")
        try:
            return found.open(rw=True, user_pin=pin)
        except p11.UserAlreadyLoggedIn:
            # Login is per process and token: this process has already given the PIN.
            return found.open(rw=True)
    except p11.PKCS11Error as error:
        raise _failure(token, "log in", error) from None


def _token_of(library: Any, token: str) -> Any:
    """The token labelled ``token``, looked for again twice when it is not found at first:
    SoftHSM2 leaves out of its slots a token whose files another process is writing as it
    reads them (its own issue #757), which server processes starting together met. The
    library is initialised again between tries, which ends any other session this process
    has with a token: it has none with one it cannot see."""
    for _ in range(TOKEN_LOOKUPS - 1):
        try:
            return library.get_token(token_label=token)
        except p11.NoSuchToken:
            time.sleep(TOKEN_LOOKUP_PAUSE_SECONDS)
            library.reinitialize()
    return library.get_token(token_label=token)


class TokenSigner:
    """The log's Ed25519 key, signing in the token; its private half never leaves it."""

    def __init__(self, key: Any, public_key: bytes, guard: _Guard) -> None:
        self._key = key
        self._public_key = public_key
        self._guard = guard

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def take_up(self, key: Any) -> None:
        """The same key, as a new session of the token gives it."""
        self._key = key

    def sign(self, message: bytes) -> bytes:
        with self._guard("sign a checkpoint"):
            signature: bytes = self._key.sign(message, mechanism=Mechanism.EDDSA)
        return signature

    def __repr__(self) -> str:
        return f"TokenSigner(public_key={self._public_key.hex()})"


class _Guard:
    """One call at a time on the custodian's session, PKCS#11 errors made CustodyError.

    An error that says the session is gone (the token removed or reset, the HSM restarted)
    marks it lost: the call fails (a 503 for its request), and the next one first opens a
    new session with ``reopen``, as often as it takes, so that the process serves again
    once the token does, without a restart."""

    def __init__(self, token: str, reopen: Callable[[], None] | None = None) -> None:
        self._token = token
        self._lock = threading.Lock()
        self._reopen = reopen
        self._lost = False

    def lose(self) -> None:
        """Open a new session before the next call: this one no longer sees the vault's
        keys, which a new one finds again or says are gone."""
        self._lost = True

    @contextmanager
    def __call__(self, action: str) -> Iterator[None]:
        with self._lock:
            try:
                if self._lost and self._reopen is not None:
                    self._reopen()
                    self._lost = False
                yield
            except p11.PKCS11Error as error:
                self._lost = self._lost or isinstance(error, SESSION_LOST)
                raise _failure(self._token, action, error) from None


def _public_key(point: bytes) -> bytes:
    """The raw 32 bytes of an Ed25519 CKA_EC_POINT, which tokens give DER-wrapped or not."""
    return point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point


class Pkcs11Custodian:
    """The vault's keys in a PKCS#11 token; the PIN is used to log in, then forgotten."""

    def __init__(self, module: str, token: str, pin: str) -> None:
        self._module = module
        self._token = token
        self._guard = _Guard(token, self._reopen)
        self._session = _open_session(module, token, pin)
        with self._guard("open the vault's keys"):
            keks = self._find_keks()
            root = self._session.get_key(ObjectClass.SECRET_KEY, label=ROOT_LABEL)
            self._root: bytes = root.sign(ROOT_MESSAGE, mechanism=Mechanism.SHA256_HMAC)
            public = self._session.get_key(ObjectClass.PUBLIC_KEY, label=LOG_LABEL)
            self._signer = TokenSigner(
                self._session.get_key(ObjectClass.PRIVATE_KEY, label=LOG_LABEL),
                _public_key(public[Attribute.EC_POINT]),
                self._guard,
            )
            origin = self._data(self._session, ORIGIN_LABEL)
        if not keks or origin is None:
            raise _no_keys(token)
        self._origin = origin.decode()
        self._take_up(keks)

    def _reopen(self) -> None:
        """A new session in place of a lost one (under the guard), with the PIN read from
        the settings again; the same vault's keys, or nothing."""
        with suppress(p11.PKCS11Error):
            self._session.close()
        self._session = _open_session(self._module, self._token, pin_from_settings(), afresh=True)
        if self._data(self._session, ORIGIN_LABEL) != self._origin.encode():
            raise CustodyError(
                f"the PKCS#11 token '{self._token}' holds another vault's keys now, or none:"
                " put this vault's token back"
            )
        keks = self._find_keks()
        if not keks:
            raise _no_keys(self._token)
        self._take_up(keks)
        self._signer.take_up(self._session.get_key(ObjectClass.PRIVATE_KEY, label=LOG_LABEL))

    def check(self) -> None:
        with self._guard("answer"):
            self._reload()

    def _find_keks(self) -> dict[int, tuple[str, Any]]:
        """The token's key-encryption keys, found by label: N -> (``pkcs11:kek-N``, key)."""
        return {
            int(named[2]): (KEK_ID_PREFIX + named[1], key)
            for key in self._session.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
            )
            if (named := KEK_LABEL.fullmatch(str(key.label)))
        }

    def _take_up(self, keks: dict[int, tuple[str, Any]]) -> None:
        self._keks: dict[str, Any] = dict(keks.values())
        self._active: str = keks[max(keks)][0]

    def _reload(self) -> None:
        """Take up the key-encryption keys another process added or destroyed (call under
        the guard): a search of the token per new data key, none per read."""
        keks = self._find_keks()
        if not keks:  # gone from under the session (the token's folder moved away)
            self._guard.lose()
            raise _no_keys(self._token)
        self._take_up(keks)

    @classmethod
    def from_settings(cls) -> Pkcs11Custodian:
        return cls(config.PKCS11_MODULE.value(), config.PKCS11_TOKEN.value(), pin_from_settings())

    @staticmethod
    def _data(session: Any, label: str) -> bytes | None:
        for found in session.get_objects(
            {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label}
        ):
            value: bytes = found[Attribute.VALUE]
            return value
        return None

    def __repr__(self) -> str:
        return f"Pkcs11Custodian(module={self._module!r}, token={self._token!r})"

    def root_secret(self) -> bytes:
        return self._root

    def log_signer(self) -> TokenSigner:
        return self._signer

    def log_origin(self) -> str:
        return self._origin

    def holder(self) -> str:
        return f"the PKCS#11 token '{self._token}'"

    def wrap(self, data_key: bytes) -> WrappedKey:
        # SoftHSM2 2.6 pads other lengths against RFC 5649 and unwraps them to a longer key.
        if len(data_key) % 8 or not 16 <= len(data_key) <= 64:
            raise CustodyError("the token wraps data keys of 16 to 64 bytes, a multiple of 8")
        with self._guard("wrap a data key"):
            self._reload()
            key = self._session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                    Attribute.VALUE: data_key,
                    **TRANSIENT_KEY,
                }
            )
            try:
                wrapped: bytes = self._keks[self._active].wrap_key(key, mechanism=WRAP)
            finally:
                key.destroy()
        return WrappedKey(self._active, wrapped)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        with self._guard("unwrap a data key"):
            if wrapped.kek_id not in self._keks:
                self._reload()
            kek = self._keks.get(wrapped.kek_id)
            if kek is None:
                raise SealError()
            try:
                key = kek.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.GENERIC_SECRET,
                    wrapped.wrapped,
                    mechanism=WRAP,
                    template=TRANSIENT_KEY,
                )
            except NOT_UNWRAPPED:
                raise SealError() from None
            try:
                data_key: bytes = key[Attribute.VALUE]
            finally:
                key.destroy()
        return data_key

    def kek_ids(self) -> list[str]:
        with self._guard("list the key-encryption keys"):
            self._reload()
        return list(self._keks)

    def active_kek(self) -> str:
        with self._guard("list the key-encryption keys"):
            self._reload()
        return self._active

    def add_kek(self) -> str:
        with self._guard("make a key-encryption key"):
            self._reload()
            kek = next_kek_id([kek.removeprefix(KEK_ID_PREFIX) for kek in self._keks])
            _generate_kek(self._session, kek)
            self._reload()
        return KEK_ID_PREFIX + kek

    def retire_kek(self, kek_id: str) -> None:
        with self._guard("destroy a key-encryption key"):
            self._reload()
            check_retirable(kek_id, list(self._keks), self._active)
            self._keks.pop(kek_id).destroy()


class NewTokenKeys:
    """A new vault's keys in the token (``NewKeys``): the library, the token, the PIN and
    the mechanisms checked at once, and a token that already holds Coffre keys refused."""

    def __init__(self, module: str, token: str, pin: str) -> None:
        self._token = token
        self._guard = _Guard(token)
        self._session = _open_session(module, token, pin)
        self._made: list[Any] = []
        try:
            with self._guard("look for a vault's keys"):
                held = list(self._session.get_objects({Attribute.LABEL: ROOT_LABEL}))
        except BaseException:
            self._session.close()
            raise
        if held:
            self._session.close()
            raise VaultStateError(
                f"the PKCS#11 token '{token}' already holds a Coffre vault's keys:"
                " use another token"
            )

    def make(self) -> str:
        session = self._session
        origin = new_origin()
        try:
            self._made.append(_generate_kek(session, FIRST_KEK))
            self._made.append(
                session.generate_key(
                    KeyType.GENERIC_SECRET,
                    256,
                    label=ROOT_LABEL,
                    store=True,
                    capabilities=MechanismFlag.SIGN,
                    template=PRIVATE_KEY,
                )
            )
            self._made.extend(
                session.generate_keypair(
                    KeyType.EC_EDWARDS,
                    label=LOG_LABEL,
                    store=True,
                    public_template={Attribute.EC_PARAMS: ED25519_PARAMS},
                    private_template=PRIVATE_KEY,
                )
            )
            self._made.append(
                session.create_object(
                    {
                        Attribute.CLASS: ObjectClass.DATA,
                        Attribute.LABEL: ORIGIN_LABEL,
                        Attribute.VALUE: origin.encode(),
                        Attribute.TOKEN: True,
                    }
                )
            )
        except p11.PKCS11Error as error:
            with suppress(CustodyError):  # the error to report is the one that stopped it
                self.destroy()
            raise _failure(self._token, "create the vault's keys", error) from None
        return origin

    def destroy(self) -> None:
        """Destroy the objects ``make`` made, and only those."""
        with self._guard("destroy the keys it made"):
            while self._made:
                self._made[-1].destroy()
                self._made.pop()

    def close(self) -> None:
        self._session.close()


def _generate_kek(session: Any, kek: str) -> Any:
    """A key-encryption key made in the token: sensitive, non-extractable, wrap and unwrap only."""
    return session.generate_key(
        KeyType.AES,
        256,
        label=_kek_label(kek),
        id=kek.encode(),
        store=True,
        capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
        template=PRIVATE_KEY,
    )


def _pin_in(path: Path) -> str:
    """The PIN a file holds; each refusal says what is wrong with the file, never a byte
    of it."""
    pin = secret_text(path, f"the PIN file {path}", CustodyError)
    if not pin:
        raise CustodyError(
            f"the PIN file {path} is empty: a wrong PIN would count towards the token's lock"
        )
    return pin


def pin_from_settings() -> str:
    """The user PIN: from the PIN file (mode 0600), else from the environment."""
    path = config.PKCS11_PIN_FILE.value()
    if path:
        return _pin_in(Path(path))
    pin = config.PKCS11_PIN.value()
    if not pin:
        raise CustodyError(
            f"no PIN for the PKCS#11 token: set {config.PKCS11_PIN_FILE.env} to a file"
            " (mode 0600) that holds it"
        )
    return pin
