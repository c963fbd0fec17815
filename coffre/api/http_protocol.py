"""uvicorn's HTTP/1.1 protocol, answering a request it cannot read with an OperationOutcome.

uvicorn answers such a request itself, before the application sees it, with a plain-text
400. A FHIR client gets JSON it can show instead, and a URL too long to parse (llhttp
keeps a URL's offsets in 16 bits) is a 414 that names the way out: a search by POST.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from coffre.api.responses import FHIR_JSON
from coffre.exceptions import FhirError
from coffre.fhir import json

MAX_URL_BYTES = 0xFFFF


class FhirHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        error = _unreadable(len(self.url))
        body = json.dumps(error.outcome())
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            f"content-type: {FHIR_JSON}\r\n".encode(),
            f"content-length: {len(body)}\r\n".encode(),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _unreadable(url_bytes: int) -> FhirError:
    if url_bytes > MAX_URL_BYTES:
        message = (
            f"the URL is {url_bytes:,} bytes, more than the {MAX_URL_BYTES:,} a request line"
            " may hold here: send a long search as POST [base]/[type]/_search with its"
            " parameters in an application/x-www-form-urlencoded body"
        )
        return FhirError(414, "too-long", message)
    message = "the request is not valid HTTP/1.1 (request line or headers malformed)"
    return FhirError(400, "structure", message)
