"""Who may read /metrics: anyone while the server requires no token, nobody once it does,
unless its operator opens them or gives the scraper a token of its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import id_token_pem
from joserfc.jwk import ECKey
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api.auth import Authority, AuthSettings
from coffre.api.auth.onetime import OneTime
from coffre.api.auth.registry import RegistryFile
from coffre.api.scraping import ScrapeAccess
from coffre.exceptions import CoffreError
from coffre.service import RecordStore

TOKEN = "9f2c" * 16


def _required() -> Authority:
    key = ECKey.generate_key("P-256", private=True).as_dict(private=True)
    return Authority(
        key, id_token_pem(), RegistryFile(None), OneTime(":memory:"), AuthSettings(mode="required")
    )


def _scraped(records: RecordStore, access: ScrapeAccess | None, **headers: str) -> int:
    app = create_app(records, authority=_required(), scrape_access=access)
    with TestClient(app, raise_server_exceptions=False) as client:
        return client.get("/metrics", headers=headers).status_code


def _token_file(folder: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path = folder / "metrics.token"
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path


def test_open_while_the_server_requires_no_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200


def test_closed_to_all_once_the_server_requires_tokens(records: RecordStore) -> None:
    assert _scraped(records, None) == 403
    assert _scraped(records, ScrapeAccess.from_settings(tokens_required=True)) == 403


def test_a_server_requiring_tokens_opens_them_when_told(
    records: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COFFRE_METRICS", "open")
    assert _scraped(records, ScrapeAccess.from_settings(tokens_required=True)) == 200


@pytest.mark.parametrize("tokens_required", [True, False])
def test_with_a_token_file_only_its_bearer_reads_them(
    records: RecordStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tokens_required: bool
) -> None:
    monkeypatch.setenv("COFFRE_METRICS_TOKEN_FILE", str(_token_file(tmp_path)))
    access = ScrapeAccess.from_settings(tokens_required)
    assert _scraped(records, access, authorization=f"Bearer {TOKEN}") == 200
    assert _scraped(records, access, authorization=f"bearer {TOKEN}") == 200
    assert _scraped(records, access, authorization=f"Bearer {TOKEN[:-1]}0") == 401
    assert _scraped(records, access, authorization=f"Basic {TOKEN}") == 401
    assert _scraped(records, access) == 401


@pytest.mark.parametrize(
    ("token", "mode", "refusal"),
    [
        (TOKEN, 0o644, "readable by others"),
        ("short", 0o600, "32 characters"),
        ("a token with spaces in it, long enough to pass", 0o600, "without spaces"),
    ],
)
def test_a_token_file_that_would_not_keep_the_token_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, token: str, mode: int, refusal: str
) -> None:
    monkeypatch.setenv("COFFRE_METRICS_TOKEN_FILE", str(_token_file(tmp_path, token, mode)))
    with pytest.raises(CoffreError, match=refusal) as refused:
        ScrapeAccess.from_settings(tokens_required=True)
    assert token not in str(refused.value)


def test_open_and_a_token_at_once_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COFFRE_METRICS", "open")
    monkeypatch.setenv("COFFRE_METRICS_TOKEN_FILE", str(_token_file(tmp_path)))
    with pytest.raises(CoffreError, match="set one of them"):
        ScrapeAccess.from_settings(tokens_required=False)
