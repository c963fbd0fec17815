"""What /proc says of the TCP sockets a process holds on a port, for the tests (conftest's
server of several processes) and the benchmarks (bench/_common), which wait until each
server process listens on a socket of its own."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

TCP_LISTEN, TCP_ESTABLISHED = "0A", "01"  # the states /proc/net/tcp writes


def states_on_port(port: int) -> dict[int, str]:
    """The state of each IPv4 TCP socket on local ``port``, by inode."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            found[int(fields[9])] = fields[3]
    return found


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds (none once it has exited)."""
    held = set()
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return held
    for fd in descriptors:
        try:
            target = fd.readlink().name
        except OSError:  # closed since listed
            continue
        if target.startswith("socket:["):
            held.add(int(target[8:-1]))
    return held


def tcp_sockets(pid: int, port: int) -> dict[str, set[int]]:
    """The inodes of the TCP sockets process ``pid`` holds on local ``port``, by state."""
    held = socket_inodes(pid)
    found: dict[str, set[int]] = {}
    for inode, state in states_on_port(port).items():
        if inode in held:
            found.setdefault(state, set()).add(inode)
    return found


def listening_count(pids: Iterable[int], port: int) -> int:
    """How many of the processes ``pids`` listen on a TCP socket of their own on ``port``
    (/proc/net/tcp read once)."""
    states = states_on_port(port)
    listening = {inode for inode, state in states.items() if state == TCP_LISTEN}
    return sum(bool(socket_inodes(pid) & listening) for pid in pids)
