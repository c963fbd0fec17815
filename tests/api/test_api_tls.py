"""`coffre serve` over HTTPS: CRUD and search through a client that trusts the test
authority alone, every URL the server builds saying https, and no way in for TLS 1.1,
plain HTTP, or a client that does not know the authority."""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import FHIR_JSON, RunningServer
from testca import ServerFiles, TestCA

from coffre.api.tls import MINIMUM_VERSION, check_files, server_context, uvicorn_options
from coffre.exceptions import CoffreError
from coffre.service import Vault

HANDSHAKE_SECONDS = 10


@pytest.fixture
def authority(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def server_files(authority: TestCA) -> ServerFiles:
    return authority.issue("server")


def _serve(vault: Vault, authority: TestCA, files: ServerFiles) -> Iterator[RunningServer]:
    running = RunningServer(vault, tls=files, verify=authority.client_context())
    yield running
    running.stop()


@pytest.fixture
def https_server(
    vault: Vault, authority: TestCA, server_files: ServerFiles
) -> Iterator[RunningServer]:
    """On each storage: PostgreSQL's is reached over TLS as well."""
    yield from _serve(vault, authority, server_files)


@pytest.fixture
def sqlite_https_server(
    tmp_path: Path, authority: TestCA, server_files: ServerFiles
) -> Iterator[RunningServer]:
    """One storage is enough to knock at the door."""
    vault = Vault.at(tmp_path / "vault")
    vault.create()
    yield from _serve(vault, authority, server_files)


def _old_client(authority: TestCA, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers ``version`` and nothing newer, with OpenSSL's security level
    lowered far enough that it really does offer it."""
    context = authority.client_context()
    with warnings.catch_warnings():  # the ssl module warns that these versions are deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_crud_and_search_over_https_with_https_urls(https_server: RunningServer) -> None:
    base = https_server.base_url
    assert base.startswith("https://")
    with httpx.Client(base_url=base, verify=https_server.verify, timeout=30) as client:
        patient = {"resourceType": "Patient", "name": [{"family": "Tremblay"}]}
        created = client.post("/Patient", json=patient, headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        assert location.startswith(f"{base}/Patient/")
        pid = created.json()["id"]

        read = client.get(f"/Patient/{pid}")
        assert read.status_code == 200 and read.json()["name"][0]["family"] == "Tremblay"
        changed = {**read.json(), "name": [{"family": "Gagnon"}]}
        assert client.put(f"/Patient/{pid}", json=changed, headers=FHIR_JSON).status_code == 200

        for family in ("Gagnon", "Gagné"):
            client.post(
                "/Patient", json={**patient, "name": [{"family": family}]}, headers=FHIR_JSON
            )
        found = client.get("/Patient", params={"family": "gagn", "_count": "1"}).json()
        assert found["resourceType"] == "Bundle" and len(found["entry"]) == 1
        links = {link["relation"]: link["url"] for link in found["link"]}
        assert {"self", "next"} <= links.keys()
        assert all(url.startswith(f"{base}/") for url in links.values())
        assert found["entry"][0]["fullUrl"].startswith(f"{base}/Patient/")
        assert client.get(links["next"]).status_code == 200

        history = client.get(f"/Patient/{pid}/_history").json()
        assert [e["fullUrl"].startswith(f"{base}/") for e in history["entry"]] == [True, True]
        metadata = client.get("/metadata").json()
        assert metadata["implementation"]["url"] == base

        assert client.delete(f"/Patient/{pid}").status_code in (200, 204)
        assert client.get(f"/Patient/{pid}").status_code == 410


def test_old_protocols_plain_http_and_unknown_authorities_are_refused_and_https_is_kept(
    sqlite_https_server: RunningServer, authority: TestCA
) -> None:
    metadata = f"{sqlite_https_server.base_url}/metadata"
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = authority.client_context()
        context.minimum_version = context.maximum_version = version
        answer = httpx.get(metadata, verify=context, timeout=30)
        assert answer.status_code == 200
        assert answer.headers["strict-transport-security"] == "max-age=31536000"
    with pytest.raises(httpx.ConnectError):
        httpx.get(metadata, verify=_old_client(authority, ssl.TLSVersion.TLSv1_1), timeout=30)
    with pytest.raises(httpx.TransportError):
        httpx.get(metadata.replace("https://", "http://"), timeout=30)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(metadata, verify=ssl.create_default_context(), timeout=30)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """The protocol version a client and a server agree on over a socket pair."""
    ours, theirs = socket.socketpair()
    ours.settimeout(HANDSHAKE_SECONDS)
    theirs.settimeout(HANDSHAKE_SECONDS)

    def serve() -> None:
        try:
            with server.wrap_socket(theirs, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            theirs.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(ours, server_hostname="localhost") as tls:
            return tls.version()
    finally:
        thread.join(HANDSHAKE_SECONDS)


def test_the_server_context_refuses_tls_1_1_even_where_openssl_would_allow_it(
    authority: TestCA, server_files: ServerFiles
) -> None:
    """A permissive system OpenSSL configuration (security level 0, TLS 1.0 allowed) is
    stood for by ``lenient``: it lets TLS 1.1 through, ``server_context`` does not."""

    def lenient() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(server_files.cert, server_files.key)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
        return context

    old = _old_client(authority, ssl.TLSVersion.TLSv1_1)
    assert _handshake(lenient(), old) == "TLSv1.1"

    def hardened() -> ssl.SSLContext:
        return server_context(None, lenient)

    assert hardened().minimum_version == MINIMUM_VERSION
    with pytest.raises(ssl.SSLError):
        _handshake(hardened(), old)
    assert _handshake(hardened(), authority.client_context()) in ("TLSv1.2", "TLSv1.3")


def test_certificate_and_key_are_checked_before_serving(
    authority: TestCA, server_files: ServerFiles, tmp_path: Path
) -> None:
    assert uvicorn_options("", "") == {}
    options = uvicorn_options(str(server_files.cert), str(server_files.key))
    assert options["ssl_context_factory"] is server_context
    other = authority.issue("other")
    with pytest.raises(CoffreError, match="without"):
        check_files("", str(server_files.key))
    with pytest.raises(CoffreError, match=r"no TLS certificate file at .*missing\.crt"):
        check_files(str(tmp_path / "missing.crt"), str(server_files.key))
    with pytest.raises(CoffreError, match=r"no TLS key file at .*missing\.key"):
        check_files(str(server_files.cert), str(tmp_path / "missing.key"))
    with pytest.raises(CoffreError, match="cannot load") as mismatched:
        check_files(str(server_files.cert), str(other.key))
    assert "PRIVATE KEY" not in str(mismatched.value)
