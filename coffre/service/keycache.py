"""The data keys a process has unwrapped, kept for the next requests, within a bound.

Unwrapping costs a key-encryption-key operation (in a token, a round trip to the HSM), so
a process keeps the keys it unwrapped; but a bulk export or a long-running server meets
every patient in turn, and one key per patient for a million patients would be hundreds
of megabytes. The least recently used keys are dropped beyond ``capacity``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping


class KeyCache:
    """Compartment token -> data key, the ``capacity`` most recently used; thread-safe
    (the event loop and the group-commit thread both use it)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a key cache holds at least one key")
        self.capacity = capacity
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, comp: bytes) -> bytes | None:
        with self._lock:
            key = self._keys.get(comp)
            if key is not None:
                self._keys.move_to_end(comp)
            return key

    def put(self, comp: bytes, key: bytes) -> None:
        self.update({comp: key})

    def update(self, keys: Mapping[bytes, bytes]) -> None:
        with self._lock:
            for comp, key in keys.items():
                self._keys[comp] = key
                self._keys.move_to_end(comp)
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)

    def forget(self, comp: bytes) -> None:
        """Drop a compartment's key: it was erased."""
        with self._lock:
            self._keys.pop(comp, None)

    def __contains__(self, comp: bytes) -> bool:
        """Whether a key is held, without counting as a use."""
        return comp in self._keys

    def __len__(self) -> int:
        return len(self._keys)
