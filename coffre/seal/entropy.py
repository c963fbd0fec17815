"""Random bytes for nonces, keys and ids, drawn from the operating system 64 KiB at a time.

``os.urandom`` gives up the GIL for its system call, and a thread that gives it up while
two others wait for it gets it back only once they have run, up to 5 ms later. The thread
that holds a vault's write lock seals records and AuditEvents, a nonce each: every such
stall held up every writer of the vault. Each thread draws from a pool of its own (a
shared one needs a lock, and waiting on it stalls the same way), which leaves the
operating system once in 5,000 nonces.

The bytes are handed out once each; a child process starts with empty pools, so that a
fork never gives the same nonce to two processes.
"""

from __future__ import annotations

import os
import threading

POOL_BYTES = 65536


class _Pool(threading.local):
    """The calling thread's random bytes, and how far they were handed out."""

    def __init__(self) -> None:
        self.buffer = b""
        self.at = 0


_pools = _Pool()


def _empty_after_fork() -> None:
    global _pools
    _pools = _Pool()


os.register_at_fork(after_in_child=_empty_after_fork)


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the operating system's cryptographic generator."""
    if size < 0:
        raise ValueError("a negative number of random bytes")
    pool = _pools
    start = pool.at
    if start + size > len(pool.buffer):
        pool.buffer, start = os.urandom(max(POOL_BYTES, size)), 0
    pool.at = start + size
    return pool.buffer[start : pool.at]
