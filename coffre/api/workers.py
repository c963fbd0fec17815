"""The server processes of ``coffre serve --workers N``, and the folder their metrics share.

Each process writes its figures in files of its own in one folder of the server run
(prometheus-client's multiprocess mode), whichever answers a scrape adds them up. The
folder is named in the environment before the processes start, since the library reads
it on import: they are spawned, so each imports it afresh with the variable set.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead
from uvicorn.supervisors import Multiprocess

from coffre import config
from coffre.api.scraping import MULTIPROCESS_ENV
from coffre.exceptions import CoffreError

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True, slots=True)
class MetricsFolder:
    """The folder of one server run's metrics; ``made``: a temporary one of its own."""

    path: Path
    made: bool

    @classmethod
    def for_this_run(cls) -> MetricsFolder:
        """``COFFRE_METRICS_DIR``, emptied of an earlier run's files, else a new private
        temporary folder; named in the environment for the processes to come."""
        chosen = config.METRICS_DIR.value()
        try:
            if chosen:
                folder = cls(Path(chosen), made=False)
                folder.path.mkdir(mode=0o700, parents=True, exist_ok=True)
                for old in folder.path.glob("*.db"):  # the library's files, and only them
                    old.unlink()
            else:
                folder = cls(Path(tempfile.mkdtemp(prefix="coffre-metrics-")), made=True)
        except OSError as error:
            raise CoffreError(
                f"cannot prepare the metrics folder {chosen}"
                f" ({config.METRICS_DIR.env}): {error.strerror or type(error).__name__}"
            ) from None
        os.environ[MULTIPROCESS_ENV] = str(folder.path)
        return folder

    def remove(self) -> None:
        """Remove the folder if this run made it; a chosen one keeps the last figures."""
        if self.made:
            shutil.rmtree(self.path, ignore_errors=True)


class Supervisor(Multiprocess):
    """Uvicorn's supervisor, which also tells the metrics of each process that is gone
    (died and replaced, or stopped): what it was doing at the moment (the booking
    requests it held) no longer counts, while what it counted stays in the totals; and
    which sees a process die while it waits for its answer to a health check."""

    def init_processes(self) -> None:
        super().init_processes()
        self._let_go_of_children_ends()

    def keep_subprocess_alive(self) -> None:
        self._noting_gone(super().keep_subprocess_alive)

    def handle_signals(self) -> None:  # SIGHUP replaces them all, SIGTTOU stops one
        self._noting_gone(super().handle_signals)

    def _noting_gone(self, step: Callable[[], None]) -> None:
        before = {process.pid for process in self.processes}
        step()
        self._let_go_of_children_ends()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                mark_process_dead(pid)  # type: ignore[no-untyped-call]

    def _let_go_of_children_ends(self) -> None:
        """Close the supervisor's copy of each started process's end of their health-check
        pipe. Kept open, it let a process killed while a check was on its way (OOM, a
        crash) be waited for the whole check's timeout (WORKER_START_SECONDS), serving
        with one process fewer; closed, its death ends the pipe and the wait at once, and
        uvicorn replaces it."""
        for process in self.processes:
            if process.pid is not None:  # started: the process holds its own copy
                process.child_conn.close()


def end_with_the_supervisor() -> None:
    """In a server process the supervisor started: be stopped (SIGTERM, the clean way) when
    the supervisor dies, however it dies. Killed (``kill -9``, out of memory), it cannot
    stop its processes, which would otherwise go on serving on the port, supervised by
    nobody and in the way of the next ``coffre serve``. Linux only; elsewhere, a no-op."""
    supervisor = multiprocessing.parent_process()
    if supervisor is None or not sys.platform.startswith("linux"):
        return  # the only process of a server of one, or not Linux
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) == 0 and os.getppid() != supervisor.pid:
        os.kill(os.getpid(), signal.SIGTERM)  # it died before the signal was asked for
