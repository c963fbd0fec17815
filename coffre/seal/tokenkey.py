"""The gateway's key for signing access tokens: a P-256 key (ES256) derived from the root.

Derived rather than stored, so that every gateway process of a deployment signs with the
same key and nothing new has to be kept: the root secret in the key custody is enough.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# 48 bytes (64 bits beyond the order's size) make the reduction's bias negligible.
_SEED_BYTES = 48


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
