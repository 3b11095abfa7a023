import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

from qimia.experiment.locks import LOCK_NAME, RunLock, lock_owner


def _contend(run_dir: str, rounds: int, overlaps) -> None:
    """Take the lock ``rounds`` times; count the times another holder was inside too."""
    for _ in range(rounds):
        with RunLock(run_dir) as lock:
            if not lock.acquired:
                continue
            try:
                os.close(os.open(Path(run_dir) / "holder", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                with overlaps.get_lock():
                    overlaps.value += 1
                continue
            os.unlink(Path(run_dir) / "holder")


def test_concurrent_jobs_never_hold_one_lock_together(tmp_path):
    # An O_EXCL create followed by a write let a second job read the empty lock as stale
    # (about one round in five overlapped here); the hard-linked whole lock never does.
    ctx = multiprocessing.get_context("fork")
    overlaps = ctx.Value("i", 0)
    jobs = [ctx.Process(target=_contend, args=(str(tmp_path), 300, overlaps)) for _ in range(4)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    assert all(job.exitcode == 0 for job in jobs)
    assert overlaps.value == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no lock, no private file left behind


def test_a_live_lock_is_respected_and_released(tmp_path):
    with RunLock(tmp_path) as first:
        assert first.acquired and lock_owner(tmp_path)["pid"] == os.getpid()
        with RunLock(tmp_path) as second:
            assert not second.acquired
        assert (tmp_path / LOCK_NAME).is_file()  # the refused job left the holder's lock alone
    assert lock_owner(tmp_path) is None and not (tmp_path / LOCK_NAME).exists()


def test_a_dead_jobs_lock_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "since": 0}))
    assert lock_owner(tmp_path) is None
    with RunLock(tmp_path) as lock:
        assert lock.acquired and lock_owner(tmp_path)["pid"] == os.getpid()


def test_a_lock_held_on_another_host_is_respected(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": 0}))
    with RunLock(tmp_path) as lock:
        assert not lock.acquired
    assert lock_owner(tmp_path)["host"] == "elsewhere"
