"""The gateway's keys for signing tokens.

Access tokens: a P-256 key (ES256) derived from the root, so that every gateway process of
a deployment signs with the same key and nothing new has to be kept: the root secret in
the key custody is enough.

ID tokens: an RSA key (RS256, which OpenID Connect requires every provider to offer). No
RSA key can be derived from a secret with this library, so one is made once and kept
sealed under a key derived from the root (AES-256-GCM): wherever it is stored, only the
holder of the root can open it.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coffre.seal.envelope import AeadEnvelope
from coffre.seal.keys import purpose_key

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# 48 bytes (64 bits beyond the order's size) make the reduction's bias negligible.
_SEED_BYTES = 48
ID_TOKEN_KEY_BITS = 2048
_ID_TOKEN_SEAL = b"coffre/v1/id-token-key"
"""What a sealed ID-token key is bound to (the AEAD's associated data): sealed under the
same key, nothing else opens as one."""


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


def access_token_jwk(root: bytes) -> dict[str, str]:
    """The private JWK (EC P-256) that signs access tokens. (The label's ``/1`` would
    number a rotation of this key alone; none is offered: a rotation of the root changes
    it.)"""
    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=_SEED_BYTES,
        salt=None,
        info=b"coffre/v1/access-token/1",
    ).derive(root)
    scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
    numbers = ec.derive_private_key(scalar, ec.SECP256R1()).public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x),
        "y": _b64(numbers.y),
        "d": _b64(scalar),
    }


def new_id_token_key() -> bytes:
    """A new RSA private key of 2048 bits, PKCS#8 PEM, to sign ID tokens with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=ID_TOKEN_KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def seal_id_token_key(root: bytes, private_pem: bytes) -> bytes:
    """The ID-token key sealed under a key derived from ``root``, to be stored."""
    return AeadEnvelope().close(_sealing_key(root), private_pem, _ID_TOKEN_SEAL)


def open_id_token_key(root: bytes, sealed: bytes) -> bytes:
    """The ID-token key (PEM) that ``seal_id_token_key`` sealed under ``root``; SealError
    if it does not open (altered, or sealed under another root)."""
    return AeadEnvelope().open(_sealing_key(root), sealed, _ID_TOKEN_SEAL)


def _sealing_key(root: bytes) -> bytes:
    return purpose_key(root, "id-token key seal")
