"""Random bytes for nonces, keys and ids, drawn from the operating system 4 KiB at a time.

``os.urandom`` gives up the GIL for its system call, and a thread that gives it up while
two others wait for it gets it back only once they have run, up to 5 ms later. The thread
that holds a vault's write lock seals records and AuditEvents, a nonce each: every such
stall held up every writer of the vault. One call in 300 now leaves the operating system.

The bytes are handed out once each, under a lock; a child process starts with an empty
pool, so that a fork never gives the same nonce to two processes.
"""

from __future__ import annotations

import os
import threading

POOL_BYTES = 4096


class _Pool:
    _lock: threading.Lock
    _buffer: bytes
    _at: int

    def __init__(self) -> None:
        self.empty()

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._at + size > len(self._buffer):
                self._buffer, self._at = os.urandom(max(POOL_BYTES, size)), 0
            start = self._at
            self._at += size
            return self._buffer[start : self._at]

    def empty(self) -> None:
        """Start again from nothing, with a new lock: another thread may have held the old
        one when the process forked."""
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.empty)


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the operating system's cryptographic generator."""
    if size < 0:
        raise ValueError("a negative number of random bytes")
    return _pool.take(size)
