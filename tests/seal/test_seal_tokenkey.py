"""The access-token signing key: derived from the root alone, a valid P-256 key, one per
root, and the same as every earlier version of Coffre derived."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey

from coffre.seal.tokenkey import access_token_jwk

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
