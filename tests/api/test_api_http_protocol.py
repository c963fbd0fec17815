"""A request uvicorn cannot read is answered by an OperationOutcome, not plain text."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from conftest import RunningServer


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


@pytest.mark.parametrize(
    "request_bytes",
    [b"NOT HTTP AT ALL\r\n\r\n", b"GET /fhir/metadata HTTP/1.1\r\nBad Header\r\n\r\n"],
)
def test_a_malformed_request_is_a_400_operation_outcome(
    server: RunningServer, request_bytes: bytes
) -> None:
    status, _, outcome = _exchange(server, request_bytes)
    assert status.startswith("HTTP/1.1 400")
    assert outcome["issue"][0]["code"] == "structure"
