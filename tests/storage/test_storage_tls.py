"""The PostgreSQL storage over TLS: the test server speaks nothing else, and a client that
asks for verify-full refuses a server whose certificate its authority did not sign or
that does not name the host it dialled."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from pgserver import Cluster
from testca import TestCA

from coffre import config
from coffre.exceptions import StorageError
from coffre.storage.postgres import PostgresStorage, check_url


def test_the_storage_connection_is_encrypted(postgres: Cluster) -> None:
    with psycopg.connect(postgres.new_storage_url()) as db:
        row = db.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        encrypted, version = row.fetchone() or (False, None)
    assert encrypted and version in ("TLSv1.2", "TLSv1.3")


def test_a_plaintext_connection_is_refused(postgres: Cluster) -> None:
    plain = f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres?sslmode=disable"
    with pytest.raises(StorageError, match=r"cannot connect.*no encryption"):
        PostgresStorage(plain)


def test_a_server_certificate_from_another_authority_is_refused(
    postgres: Cluster, tmp_path: Path
) -> None:
    stranger = TestCA(tmp_path, name="Another CA")
    with pytest.raises(StorageError, match=r"cannot connect.*certificate verify failed"):
        PostgresStorage(postgres.url(sslrootcert=stranger.cert_path))


def test_verify_full_refuses_a_certificate_for_another_host(postgres: Cluster) -> None:
    """The certificate is genuine, but for localhost: dialled as db.example, it is not the
    server the URL names (verify-ca would have let it through)."""
    url = postgres.url().replace("@127.0.0.1:", "@db.example:") + "&hostaddr=127.0.0.1"
    with pytest.raises(StorageError, match=r"cannot connect.*does not match host name"):
        PostgresStorage(url)


@pytest.mark.parametrize("mode", ["", "disable", "prefer", "require", "verify-ca"])
def test_a_url_short_of_verify_full_is_refused_when_tls_is_required(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql://coffre@db.example/coffre" + (f"?sslmode={mode}" if mode else "")
    check_url(url)
    monkeypatch.setenv(config.STORAGE_REQUIRE_TLS.env, "1")
    with pytest.raises(StorageError, match="sslmode=verify-full"):
        check_url(url)
    check_url("postgresql://coffre@db.example/coffre?sslmode=verify-full&sslrootcert=/etc/ca.crt")


def test_a_requiressl_that_overrides_verify_full_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq reads requiressl=0 after sslmode: the URL asked for verify-full and got prefer."""
    monkeypatch.setenv(config.STORAGE_REQUIRE_TLS.env, "1")
    url = "postgresql://coffre@db.example/coffre?sslmode=verify-full&sslrootcert=ca&requiressl=0"
    with pytest.raises(StorageError, match="reads it as sslmode=prefer; a requiressl parameter"):
        check_url(url)


def test_the_key_password_of_a_client_certificate_is_refused_in_the_url() -> None:
    with pytest.raises(StorageError, match="password") as refused:
        check_url("postgresql://coffre@db.example/coffre?sslkey=/k.pem&sslpassword=hunter2")
    assert "hunter2" not in str(refused.value)
