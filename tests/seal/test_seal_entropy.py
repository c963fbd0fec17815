"""Random bytes from a pool (coffre.seal.entropy): each byte handed out once, whatever the
sizes asked, the threads asking, or a fork."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.seal.entropy import POOL_BYTES, random_bytes


@given(sizes=st.lists(st.integers(min_value=0, max_value=2 * POOL_BYTES), max_size=20))
def test_each_draw_has_the_size_asked(sizes: list[int]) -> None:
    assert [len(random_bytes(size)) for size in sizes] == sizes


def test_draws_never_repeat_across_refills() -> None:
    draws = [random_bytes(12) for _ in range(3 * POOL_BYTES // 12)]
    assert len(set(draws)) == len(draws)


def test_threads_drawing_at_once_never_get_the_same_bytes() -> None:
    drawn: list[list[bytes]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def draw(into: list[bytes]) -> None:
        start.wait()
        into.extend(random_bytes(16) for _ in range(2_000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for into in drawn for value in into]
    assert len(set(every)) == len(every) == 16_000


def test_a_forked_child_draws_other_bytes_than_its_parent() -> None:
    random_bytes(1)  # the pool holds bytes the child must not reuse
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, random_bytes(32))
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    from_child = os.read(read, 32)
    os.close(read)
    assert len(from_child) == 32 and from_child != random_bytes(32)


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        random_bytes(-1)
