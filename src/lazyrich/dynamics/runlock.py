"""One writing process per run directory: an exclusive ``flock`` on ``run_dir/.lock``.

The operating system drops the lock when the holding process exits in any way (``kill -9`` included), so a
crash never leaves a stale lock. Within one process the lock is shared: every :class:`RunLock` of the same
directory holds the same descriptor, and the lock is released when the last one is released or garbage
collected. The lock file holds the holder's pid and host name, for the refusal message. On platforms without
``fcntl`` (Windows) or file systems without ``flock`` the run proceeds unlocked, with a warning for the latter.
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
import weakref
from pathlib import Path
from typing import Dict, List

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["RunLock", "RunLockedError", "LOCK_FILE"]

LOCK_FILE = ".lock"
_HELD: Dict[str, List[int]] = {}  # real path -> [fd, count]
_MUTEX = threading.Lock()


class RunLockedError(RuntimeError):
    """Another process is writing into the run directory."""


def _release(key: str) -> None:
    with _MUTEX:
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] <= 0:
            del _HELD[key]
            try:
                os.close(held[0])  # closing the last descriptor drops the flock
            except OSError:
                pass


class RunLock:
    """Hold the writer's lock of ``run_dir`` (which must exist) until :meth:`release` or garbage collection.

    Raises :class:`RunLockedError` (one sentence naming the holder) when another process holds it.
    """

    def __init__(self, run_dir) -> None:
        self.path = Path(run_dir)
        key = os.path.realpath(self.path)
        with _MUTEX:
            held = _HELD.get(key)
            if held is None:
                fd = self._acquire()
                held = _HELD[key] = [fd, 0]
            held[1] += 1
        self._finalizer = weakref.finalize(self, _release, key)

    def _acquire(self) -> int:
        lock = self.path / LOCK_FILE
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            finally:
                os.close(fd)
            raise RunLockedError(
                f"{self.path} is being written by another process ({holder}); wait for it to finish or stop it, "
                "or choose another run directory."
            ) from None
        except OSError as e:  # e.g. a file system without flock
            warnings.warn(f"Could not lock {self.path} ({e}); two processes writing into it at once would not be "
                          "detected.", RuntimeWarning, stacklevel=4)
            return fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        return fd

    def release(self) -> None:
        """Release this hold (idempotent)."""
        self._finalizer()

    @property
    def held(self) -> bool:
        return self._finalizer.alive
