"""One run, done once: a lock file that concurrent jobs on one comparison folder respect.

    with RunLock(run_dir) as lock:
        if lock.acquired:
            ...train...            # nobody else trains this run now

The lock is ``<run_dir>/.lock``, holding the owner's host and pid. It is written whole to a
private file first and then hard-linked into place: the link is atomic and fails if a lock
exists (POSIX file systems, NFS included), so no job ever reads a lock without its owner. (An
``O_EXCL`` create followed by a write leaves a moment in which the file is empty; a second job
reading it then took the empty lock for a stale one and trained the run too.)

A lock whose owner is a dead process on this host is stale and taken over: it is renamed away
(atomic: one job of several wins) and its bytes compared with those judged stale, so a job never
removes a lock that another job took over in the meantime. A lock held on another host is
respected until it is removed.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
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


def _owner(text: str) -> dict | None:
    """The live owner a lock's text names, ``None`` if it names a dead process on this host."""
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:  # not written by this module: nobody's
        return None
    if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1))):
        return None
    return owner


def lock_owner(run_dir: Path) -> dict | None:
    """The live owner of ``run_dir``'s lock (``{"host", "pid", "since"}``), ``None`` if unlocked or stale."""
    try:
        return _owner((Path(run_dir) / LOCK_NAME).read_text())
    except FileNotFoundError:
        return None


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
        mine = self.path.with_name(f"{LOCK_NAME}.{uuid.uuid4().hex}")  # private to this call (threads too)
        mine.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}))
        try:
            for _ in range(2):  # second try after removing a stale lock
                try:
                    os.link(mine, self.path)
                except FileExistsError:
                    if not self._remove_stale():
                        return self
                    continue
                self.acquired = True
                return self
            return self
        finally:
            mine.unlink()

    def _remove_stale(self) -> bool:
        """Remove the lock if it is stale (or gone); ``False`` if a live job holds it."""
        try:
            seen = self.path.read_text()
        except FileNotFoundError:
            return True
        if _owner(seen) is not None:
            return False
        away = self.path.with_name(f"{LOCK_NAME}.stale.{uuid.uuid4().hex}")
        try:
            self.path.rename(away)
        except FileNotFoundError:  # another job removed it first
            return True
        if away.read_text() != seen:  # another job took it over after we read it: put it back
            away.rename(self.path)
            return False
        away.unlink()
        return True

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.acquired:
            self.path.unlink(missing_ok=True)
            self.acquired = False
