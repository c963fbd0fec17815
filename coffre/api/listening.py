"""A listening socket of its own for each server process, so that connections are shared.

uvicorn's worker processes all listen on the one socket their supervisor bound, and the
process that wakes first when connections arrive accepts every one waiting. A client that
opens its pool at once (30 connections in a burst, as an integration engine or a proxy
does) had 26 of them on one process and 4 on the other, or 29 and 1: one core did nearly
all the work for as long as the connections lived, while the other idled. Bound with
``SO_REUSEPORT``, each process's own socket is handed its share of the new connections by
the kernel, by a hash of their addresses.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from coffre.exceptions import CoffreError


def claim(host: str, port: int) -> socket.socket:
    """``host``:``port`` bound, not yet listening, or why not in one line: bound before
    the server says it serves, so that it never says so of another program's port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise _cannot_listen(host, port, error) from None
    return sock


def _cannot_listen(host: str, port: int, error: OSError) -> CoffreError:
    return CoffreError(f"cannot listen on {host}:{port}: {error.strerror}")


def serve_on(config: uvicorn.Config, sock: socket.socket) -> None:
    """Serve in this process on ``sock`` (from :func:`claim`), as ``uvicorn.run`` would,
    exiting as it does when the server cannot start."""
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again once stopped
        server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


class PortPerProcess(socket.socket):
    """The port, bound but not listening, in the supervisor, which keeps it for the workers.
    Each worker process it is sent to (uvicorn pickles it to them) receives instead a
    socket of its own, bound to the same address with ``SO_REUSEPORT``, which uvicorn
    listens on there."""

    @classmethod
    def bind_to(cls, host: str, port: int) -> PortPerProcess:
        """The port, once no other program listens on it: ``SO_REUSEPORT`` would let a
        second server of the same user share it without a word."""
        with claim(host, port) as probe:
            # The whole address: the port the system chose for 0, an IPv6 scope.
            family, address = probe.family, probe.getsockname()
        kept = cls(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            _bind(kept, address)
        except OSError as error:
            raise _cannot_listen(host, port, error) from None
        return kept

    def __reduce__(self) -> tuple[Any, ...]:
        return (_own_socket, (self.family, self.getsockname()))


def _own_socket(family: int, address: tuple[Any, ...]) -> socket.socket:
    """A worker's socket. A worker that cannot have one exits as uvicorn's workers do when
    they cannot start, and the supervisor stops; any other exit, and it would start the
    worker again and again while nothing listens."""
    own = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        _bind(own, address)
    except OSError as error:
        print(
            f"error: a server process cannot listen on {address}: {error.strerror}", file=sys.stderr
        )
        raise SystemExit(STARTUP_FAILURE) from None
    return own


def _bind(sock: socket.socket, address: tuple[Any, ...]) -> None:
    """Bind ``sock`` with ``SO_REUSEPORT``; closed if it cannot be."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise


WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def wait_until_listening(host: str, port: int, seconds: float) -> bool:
    """Whether a process of the server accepts a connection on ``host``:``port`` (loopback
    for a wildcard address) within ``seconds``: the workers listen only once they have
    started, seconds after the command."""
    address = WILDCARDS.get(host, host)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False
