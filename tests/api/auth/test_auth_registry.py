"""Passwords as the registry keeps them: scrypt with OWASP's parameters, older hashes still
checked by the parameters they carry."""

from __future__ import annotations

import hashlib

from coffre.api.auth.registry import Registry, check_password, new_user

PASSWORD = "correct horse battery"


def test_a_new_password_is_hashed_with_owasp_parameters_and_checks() -> None:
    user = new_user("alice", "patient", "Patient/alice", PASSWORD)
    scheme, n, r, p, salt, _ = user.password_hash.split("$")
    assert (scheme, n, r, p, len(bytes.fromhex(salt))) == ("scrypt", "32768", "8", "3", 16)
    registry = Registry(users={"alice": user})
    assert registry.sign_in("alice", PASSWORD) == user
    assert registry.sign_in("alice", PASSWORD + "!") is None
    assert registry.sign_in("bob", PASSWORD) is None


def test_a_hash_made_with_the_former_parameters_still_checks() -> None:
    salt = bytes(range(16))
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**15, r=8, p=1, maxmem=2**26)
    stored = f"scrypt$32768$8$1${salt.hex()}${digest.hex()}"
    assert check_password(PASSWORD, stored)
    assert not check_password(PASSWORD + "!", stored)
