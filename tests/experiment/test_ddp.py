"""``trainer=ddp`` with two CPU processes on gloo, launched through the real CLI."""

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "qimia", "train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "tiny=true", "threads=1", "trainer.max_steps=3", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "logger=csv", f"hydra.run.dir={tmp_path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    assert "distributed_backend=gloo" in done.stdout + done.stderr
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "csv" / "metrics.csv").exists()
