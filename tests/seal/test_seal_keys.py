"""Purpose keys and the tokens they make."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from coffre.seal import PurposeKeys, random_key
from coffre.seal.keys import KeyedSha256, Pseudonyms

keys = PurposeKeys.derive(random_key())
ids = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)


@given(first=ids, second=ids)
def test_locations_are_equal_only_for_equal_references(first: str, second: str) -> None:
    assert (keys.location("Patient", first) == keys.location("Patient", second)) == (
        first == second
    )


@given(resource_id=ids)
def test_a_location_depends_on_type_and_on_the_root(resource_id: str) -> None:
    other = PurposeKeys.derive(random_key())
    assert keys.location("Patient", resource_id) != keys.location("Observation", resource_id)
    assert keys.location("Patient", resource_id) != other.location("Patient", resource_id)
    assert len(keys.location("Patient", resource_id)) == 32


def test_purposes_never_share_a_token() -> None:
    tokens = {
        keys.location("Patient", "1"),
        keys.patient_compartment("1"),
        keys.shared_compartment("Patient"),
        keys.kind("Patient")[:16],
        keys.index("Patient", "_id", "1"),
    }
    assert len(tokens) == 5


def test_index_tokens_separate_type_parameter_and_value() -> None:
    assert keys.index("Patient", "identifier", "a|b") != keys.index("Patient", "identifie", "ra|b")
    assert keys.index("Patient", "identifier", "x") != keys.index("Person", "identifier", "x")


def test_a_root_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError):
        PurposeKeys.derive(b"short")


def test_keys_never_show_in_repr() -> None:
    assert "secret" in repr(keys)
    assert keys.location_key.hex() not in repr(keys)


@given(key=st.binary(max_size=64), message=st.binary(max_size=300))
def test_a_keyed_sha256_is_the_hmac_of_the_standard_library(key: bytes, message: bytes) -> None:
    mac = KeyedSha256(key)
    assert mac.digest(message) == hmac.digest(key, message, "sha256")
    assert mac.digest(message) == hmac.digest(
        key, message, "sha256"
    )  # its states stay as they were


def test_a_keyed_sha256_refuses_a_key_longer_than_a_block() -> None:
    with pytest.raises(ValueError, match="at most 64 bytes"):
        KeyedSha256(bytes(65))


def test_tokens_are_the_hmacs_of_their_purpose_keys() -> None:
    """The tokens a vault already holds stay valid: each is HMAC-SHA256 of its purpose key."""
    assert keys.location("Patient", "p1") == hmac.digest(keys.location_key, b"Patient/p1", "sha256")
    assert keys.kind("Patient") == hmac.digest(keys.kind_key, b"Patient", "sha256")[:16]
    fields = b"\x01" * 150
    assert keys.leaf_tag(fields) == hmac.digest(keys.leaf_key, fields, "sha256")[:16]


@given(
    value=st.text(max_size=300),
    size=st.sampled_from([1, 2, 4, 16, 64]),
)
def test_a_short_index_is_keyed_blake2b_of_its_value(value: str, size: int) -> None:
    """The tokens a vault already holds stay valid: the keyed state copied for each value
    gives what a fresh keyed BLAKE2b does, at every size and twice in a row."""
    key = keys.index("", "", "\x00value key")
    message = f"Observation\x1fcode\x1f{value}".encode()
    expected = hashlib.blake2b(message, key=key, digest_size=size).digest()
    assert keys.short_index("Observation", "code", value, size) == expected
    assert keys.short_index("Observation", "code", value, size) == expected


def test_a_projects_pseudonyms_are_stable_and_its_own() -> None:
    root = random_key()
    first, again, second = (
        Pseudonyms(root, "p1"),
        Pseudonyms(root, "p1"),
        Pseudonyms(root, "p2"),
    )
    assert first.of("ana") == again.of("ana") != first.of("bob")
    assert first.of("ana") != second.of("ana")
    assert first.of("ana") != Pseudonyms(random_key(), "p1").of("ana")
    assert len(first.of("ana")) == 32 and "ana" not in first.of("ana")
    derived = hmac.digest(
        HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"coffre/v1/research project/p1"
        ).derive(root),
        b"ana",
        "sha256",
    )
    assert first.of("ana") == derived[:16].hex()
    assert repr(first) == "Pseudonyms(<secret>)"
