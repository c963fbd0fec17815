"""HTTPS for ``coffre serve``: uvicorn's options for a certificate and key, and a TLS
context that refuses every protocol version older than TLS 1.2.

uvicorn builds its context in each worker process from the files; its
``ssl_context_factory`` hook (uvicorn 0.47+) lets us raise the minimum version on that
context, whatever OpenSSL's system-wide default is. The files are loaded once in the
parent before any worker starts, so that a wrong path or a key that does not match the
certificate stops ``coffre serve`` with one clear line.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coffre import config
from coffre.exceptions import CoffreError

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

STRICT_TRANSPORT = ("Strict-Transport-Security", "max-age=31536000")
"""Sent over HTTPS: a browser that has reached Coffre once goes on using HTTPS for a year,
so that neither the portal's session cookie nor a token is ever sent in clear to whoever
answers for the host on plain HTTP."""


def server_context(_config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's context (the certificate chain and key loaded), TLS 1.2 at least."""
    context = default()
    context.minimum_version = MINIMUM_VERSION
    return context


def check_files(cert: str, key: str) -> None:
    """Refuse a key without a certificate, a file that cannot be read, or a pair that does
    not belong together; an empty ``cert`` means plain HTTP."""
    if key and not cert:
        raise CoffreError(f"{config.TLS_KEY.env} is set without {config.TLS_CERT.env}")
    if not cert:
        return
    for what, path in (("certificate", cert), ("key", key)):
        if path and not Path(path).is_file():
            raise CoffreError(f"no TLS {what} file at {path}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key or None)
    except (ssl.SSLError, OSError) as error:
        raise CoffreError(
            f"cannot load the TLS certificate {cert} with its key: {error.strerror or error}"
        ) from None


def uvicorn_options(cert: str, key: str) -> dict[str, Any]:
    """What ``uvicorn.run`` needs to speak HTTPS with ``cert`` (a PEM chain) and ``key``
    (empty: the key is in the chain's file); nothing for plain HTTP."""
    check_files(cert, key)
    if not cert:
        return {}
    return {
        "ssl_certfile": cert,
        "ssl_keyfile": key or None,
        "ssl_context_factory": server_context,
    }
