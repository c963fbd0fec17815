"""A request uvicorn cannot read is answered by an OperationOutcome, not plain text."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from conftest import RunningServer

from coffre import config
from coffre.service import Vault


def _exchange(server: RunningServer, request: bytes) -> tuple[str, dict[str, str], Any]:
    address = urlsplit(server.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, orjson.loads(body)


def test_a_url_too_long_to_parse_is_a_414_that_names_post_search(server: RunningServer) -> None:
    query = "name=" + "a" * 70_000
    request = f"GET /fhir/Patient?{query} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    status, headers, outcome = _exchange(server, request)
    assert status.startswith("HTTP/1.1 414")
    assert headers["content-type"].startswith("application/fhir+json")
    issue = outcome["issue"][0]
    assert (outcome["resourceType"], issue["code"]) == ("OperationOutcome", "too-long")
    assert "POST [base]/[type]/_search" in issue["diagnostics"]


_PATIENT = b'{"resourceType": "Patient"}'
_LATIN_1_CONDITION = (  # what an HTTP client carries as it is; a test client re-encodes it
    b"POST /fhir/Patient HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    b"Content-Type: application/fhir+json\r\nIf-None-Exist: name=\xc9lise\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_PATIENT), _PATIENT)
)


@pytest.mark.parametrize(
    ("request_bytes", "says"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "HTTP"),
        (b"GET /fhir/metadata HTTP/1.1\r\nBad Header\r\n\r\n", "HTTP"),
        (_LATIN_1_CONDITION, "If-None-Exist condition holds bytes that are not UTF-8"),
    ],
)
def test_a_malformed_request_is_a_400_operation_outcome(
    server: RunningServer, request_bytes: bytes, says: str
) -> None:
    status, _, outcome = _exchange(server, request_bytes)
    assert status.startswith("HTTP/1.1 400")
    assert outcome["issue"][0]["code"] == "structure"
    assert says in outcome["issue"][0]["diagnostics"]


def test_headers_past_the_bound_are_a_431_answered_before_their_end(
    server: RunningServer,
) -> None:
    """The server answers once the bound is passed, without waiting for the rest (which
    it then reads and drops, so that the answer is not lost to a reset connection)."""
    address = urlsplit(server.base_url)
    head = b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\nX-Padding: "
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head + b"a" * 300_000)
        first = connection.recv(65536)  # the headers never end: an answer is early
        for _ in range(100):  # 6.5 MB more, read and dropped
            connection.sendall(b"a" * 65536)
        received = first
        while chunk := connection.recv(65536):
            received += chunk
    status, _, rest = received.partition(b"\r\n")
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    outcome = orjson.loads(rest.partition(b"\r\n\r\n")[2])
    assert outcome["resourceType"] == "OperationOutcome"
    assert "256 KB" in outcome["issue"][0]["diagnostics"]


def test_headers_under_the_bound_are_served(server: RunningServer) -> None:
    padding = "a" * 100_000
    request = f"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\nX-Padding: {padding}\r\nConnection: close\r\n\r\n"
    status, _, outcome = _exchange(server, request.encode())
    assert status.startswith("HTTP/1.1 200")
    assert outcome["resourceType"] == "CapabilityStatement"


@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/Patient/nobody", "/portal/"])
def test_every_answer_forbids_reading_it_as_another_type(server: RunningServer, path: str) -> None:
    origin = server.base_url.removesuffix("/fhir")
    response = httpx.get(origin + path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in response.headers  # only over HTTPS


@pytest.fixture
def impatient(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    """A server whose requests stall out after a second."""
    monkeypatch.setenv(config.REQUEST_STALL_SECONDS.env, "1")
    running = RunningServer(vault)
    yield running
    running.stop()


def _connected(server: RunningServer) -> socket.socket:
    address = urlsplit(server.base_url)
    return socket.create_connection((address.hostname, address.port), timeout=30)


def _all_of(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_requests_that_stall_half_sent_do_not_hold_their_connections(
    impatient: RunningServer,
) -> None:
    """Slow clients (a slowloris) would otherwise hold every connection a process can open."""
    with _connected(impatient) as silent:
        assert _all_of(silent) == b""  # closed, without a word
    with _connected(impatient) as slow_head:
        slow_head.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\n")
        time.sleep(0.5)
        slow_head.sendall(b"X-Slow: 1\r\n")  # still within the headers' one second
        status, _, rest = _all_of(slow_head).partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert b"did not arrive whole within 1 s" in rest
    with _connected(impatient) as slow_body:
        head = b"POST /fhir/Patient HTTP/1.1\r\nHost: localhost\r\n"
        head += b"Content-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n"
        slow_body.sendall(head + b'{"resourceType"')
        received = _all_of(slow_body)  # closed once the body paused a second
    assert b"201" not in received
    with _connected(impatient) as prompt:  # a request sent whole is served as ever
        prompt.sendall(
            b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        time.sleep(1.5)
        assert _all_of(prompt).startswith(b"HTTP/1.1 200")


def test_a_stop_ends_a_trickling_request_once_its_time_is_up(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending its body a byte a second held a stop (SIGTERM, as a rolling
    restart sends) open for as long as its body lasted: here a minute, not two seconds."""
    monkeypatch.setenv(config.STOP_SECONDS.env, "2")
    server = RunningServer(vault)
    body = b'{"resourceType": "Patient"%s}' % (b" " * 40)
    head = (
        b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/fhir+json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", server.port)) as trickler:
        trickler.sendall(head + body[:1])
        time.sleep(0.5)
        asked = time.monotonic()
        server.process.terminate()
        for byte in body[1:]:
            if server.process.poll() is not None:
                break
            try:
                trickler.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(1)
        server.process.wait(timeout=120)
    assert time.monotonic() - asked < len(body) / 2
