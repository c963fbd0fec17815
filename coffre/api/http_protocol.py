"""uvicorn's HTTP/1.1 protocol, answering a request it cannot read with an OperationOutcome.

uvicorn answers such a request itself, before the application sees it, with a plain-text
400. A FHIR client gets JSON it can show instead, and a URL too long to parse (llhttp
keeps a URL's offsets in 16 bits) is a 414 that names the way out: a search by POST.
Headers past a bound are a 431, answered as soon as the bound is passed. A request
that stalls half-sent is cut short (``COFFRE_REQUEST_STALL_SECONDS``): its headers must
arrive whole within that time (408 when some came), its body must not pause longer, so
that slow clients cannot hold every connection a process can open.
"""

from __future__ import annotations

import asyncio
from functools import cache

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from coffre import config
from coffre.api.responses import FHIR_JSON
from coffre.exceptions import FhirError
from coffre.fhir import json

MAX_URL_BYTES = 0xFFFF
MAX_HEAD_BYTES = 256 * 1024
"""The request line and headers together (nginx's default is 32 KB): the parser keeps a
header whole before handing it on, so without a bound a client could send one of any
size and have it held in memory."""


LINGER_SECONDS = 5.0
"""How long a refused connection's further input is read and dropped before it closes:
closed at once with the client still sending, the kernel would reset it, and the
client could lose the answer."""


class FhirHttpToolsProtocol(HttpToolsProtocol):
    _in_head = True
    _head_bytes = 0
    _refused = False
    _stall: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()  # the first request's headers: the connection says nothing yet

    def connection_lost(self, exc: Exception | None) -> None:
        self._unwatch()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        elif self._stall is not None:
            self._watch()  # the body moves on
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(_head_too_large(self._head_bytes))

    def on_message_begin(self) -> None:
        if self._stall is None:  # the headers' time runs from their first byte
            self._watch()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._watch()  # now its body, if any, until the message is complete
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._unwatch()  # what follows is the answer, then uvicorn's keep-alive
        super().on_message_complete()

    def _watch(self) -> None:
        self._unwatch()
        if stall_seconds():
            self._stall = self.loop.call_later(stall_seconds(), self._stalled)

    def _unwatch(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        """The request stopped half-sent: a connection that sent nothing is closed
        silently (a browser's spare one), headers cut short get a 408, and a body that
        paused is cut, the application then told the client left."""
        self._stall = None
        if self._refused or self.transport.is_closing():
            return
        if self._in_head and self._head_bytes:
            message = (
                f"the request's headers did not arrive whole within {stall_seconds()} s:"
                " send it again"
            )
            self._refuse(FhirError(408, "timeout", message))
        else:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._refuse(_unreadable(len(self.url)))

    def _refuse(self, error: FhirError) -> None:
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
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


@cache
def stall_seconds() -> int:
    """``COFFRE_REQUEST_STALL_SECONDS``, read once a process; 0: requests never stall out."""
    return int(config.REQUEST_STALL_SECONDS.value())


def _head_too_large(received: int) -> FhirError:
    message = (
        f"the request's headers take more than {MAX_HEAD_BYTES // 1024} KB ({received:,} bytes"
        " received before their end): send less, or a long search as POST"
        " [base]/[type]/_search with its parameters in the body"
    )
    return FhirError(431, "too-long", message)


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
