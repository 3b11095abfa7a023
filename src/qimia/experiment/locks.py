"""One run, done once: a lock file that concurrent jobs on one comparison folder respect.

    with RunLock(run_dir) as lock:
        if lock.acquired:
            ...train...            # nobody else trains this run now

The lock is ``<run_dir>/.lock``, created with ``O_CREAT | O_EXCL`` (atomic on POSIX file systems,
including NFS v3+), holding the owner's host and pid. A lock whose owner is a dead process on
this host is stale and taken over; a lock held on another host is respected until it is removed.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def lock_owner(run_dir: Path) -> dict | None:
    """The live owner of ``run_dir``'s lock (``{"host", "pid", "since"}``), ``None`` if unlocked or stale."""
    try:
        owner = json.loads((Path(run_dir) / LOCK_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1))):
        return None
    return owner


class RunLock:
    """Exclusive ownership of one run folder for the duration of a ``with`` block.

    Attributes:
        acquired: whether this process holds the lock (``False``: a live process elsewhere does).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.acquired = False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if lock_owner(self.path.parent) is not None:
                    return self
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f)
            self.acquired = True
            return self
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.acquired:
            self.path.unlink(missing_ok=True)
            self.acquired = False
