"""The access-token signing key: derived from the root alone, a valid P-256 key, one per
root, and the same as every earlier version of Coffre derived; the ID-token key: RSA,
sealed under the root and opened under it alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from coffre.exceptions import SealError
from coffre.seal.tokenkey import (
    access_token_jwk,
    new_id_token_key,
    open_id_token_key,
    seal_id_token_key,
)

roots = st.binary(min_size=32, max_size=32)


@settings(max_examples=25)
@given(roots)
def test_the_key_is_a_function_of_the_root_and_signs_what_its_public_half_checks(
    root: bytes,
) -> None:
    private = access_token_jwk(root)
    assert private == access_token_jwk(root)
    key = ECKey.import_key(dict(private))
    public = ECKey.import_key(key.as_dict(private=False))
    token = jwt.encode({"alg": "ES256"}, {"sub": "x"}, key, algorithms=["ES256"])
    assert jwt.decode(token, public, algorithms=["ES256"]).claims == {"sub": "x"}


@settings(max_examples=25)
@given(roots, roots)
def test_other_roots_give_other_keys(root: bytes, other: bytes) -> None:
    if root != other:
        assert access_token_jwk(root)["d"] != access_token_jwk(other)["d"]


def test_the_key_of_a_root_is_the_one_coffre_has_always_derived() -> None:
    """Tokens signed before an upgrade stay good: the derivation must not change."""
    assert access_token_jwk(bytes(32))["x"] == "Zk2hj8uYc1kzxJjaTeWD2W1VcIwFFiRBZuMfWy2fbn4"


@pytest.fixture(scope="module")
def id_key() -> bytes:
    return new_id_token_key()


def test_the_id_token_key_is_rsa_2048_and_signs_rs256(id_key: bytes) -> None:
    key = RSAKey.import_key(id_key)
    assert key.is_private and key.raw_value.key_size == 2048
    public = RSAKey.import_key(key.as_dict(private=False))
    token = jwt.encode({"alg": "RS256"}, {"sub": "x"}, key, algorithms=["RS256"])
    assert jwt.decode(token, public, algorithms=["RS256"]).claims == {"sub": "x"}


@settings(max_examples=10)
@given(roots, roots)
def test_the_sealed_id_token_key_opens_under_its_root_only(
    id_key: bytes, root: bytes, other: bytes
) -> None:
    sealed = seal_id_token_key(root, id_key)
    assert id_key not in sealed and b"PRIVATE KEY" not in sealed
    assert open_id_token_key(root, sealed) == id_key
    if other != root:
        with pytest.raises(SealError):
            open_id_token_key(other, sealed)


def test_a_sealed_id_token_key_altered_does_not_open(id_key: bytes) -> None:
    sealed = bytearray(seal_id_token_key(bytes(32), id_key))
    sealed[40] ^= 1
    with pytest.raises(SealError):
        open_id_token_key(bytes(32), bytes(sealed))
