"""The authorisation settings: what `coffre serve` refuses to start with."""

from __future__ import annotations

import pytest

from coffre.api.auth import AuthSettings
from coffre.exceptions import CoffreError


def test_the_defaults_leave_tokens_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUTH", "PUBLIC_URL", "ACCESS_TOKEN_SECONDS", "OIDC_ISSUER", "OIDC_JWKS_URL"):
        monkeypatch.delenv(f"COFFRE_{name}", raising=False)
    assert AuthSettings.from_settings() == AuthSettings(mode="off", token_seconds=300)


def test_the_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COFFRE_AUTH", "required")
    monkeypatch.setenv("COFFRE_PUBLIC_URL", "https://fhir.example.org/")
    monkeypatch.setenv("COFFRE_ACCESS_TOKEN_SECONDS", "600")
    monkeypatch.setenv("COFFRE_OIDC_ISSUER", "https://idp.example")
    monkeypatch.setenv("COFFRE_OIDC_JWKS_URL", "https://idp.example/jwks")
    monkeypatch.setenv("COFFRE_OIDC_AUDIENCE", "coffre")
    assert AuthSettings.from_settings() == AuthSettings(
        "required",
        "https://fhir.example.org",
        600,
        "https://idp.example",
        "https://idp.example/jwks",
        "coffre",
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("COFFRE_AUTH", "maybe", r"it takes 'off' or 'required' \(any case\)"),
        ("COFFRE_ACCESS_TOKEN_SECONDS", "86400", "30 to 3600"),
        ("COFFRE_ACCESS_TOKEN_SECONDS", "five", "it takes a whole number"),
        ("COFFRE_OIDC_ISSUER", "https://idp.example", "or neither"),
    ],
)
def test_a_setting_that_cannot_be_right_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.delenv("COFFRE_OIDC_JWKS_URL", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(CoffreError, match=message):
        AuthSettings.from_settings()
