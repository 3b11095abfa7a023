"""The on-disk store: round trip, fp16, integrity errors, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from qimia.dual.errors import CorruptShardError, StoreError
from qimia.dual.reconstruct import reconstruct_layer
from qimia.dual.store import META_COLUMNS, DualStore, LayerSpec


def _store(tmp_path, dtype="float32"):
    spec = LayerSpec(name="fc", index=0, d_key=4, d_value=3, weight="fc.weight", bias="fc.bias")
    store = DualStore.create(tmp_path / "s", [spec], dtype=dtype, w0={"fc.weight": torch.zeros(3, 4)})
    rng = np.random.default_rng(0)
    k, v = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    meta = np.zeros((5, len(META_COLUMNS)), np.int64)
    meta[:, 1] = np.arange(5)
    store.append([{"step": 0, "groups": [], "params": {}}], {"fc": (k, v, meta)})
    return store, k, v


def test_round_trip_and_metadata(tmp_path):
    store, k, v = _store(tmp_path)
    again = DualStore.open(tmp_path / "s", verify="full")
    (shard,) = again.shards("fc")
    np.testing.assert_array_equal(shard.keys, k)
    np.testing.assert_array_equal(shard.values, v)
    np.testing.assert_allclose(shard.vnorm, np.linalg.norm(v, axis=1), rtol=1e-6)
    assert again.meta(0)[:, 1].tolist() == [0, 1, 2, 3, 4]
    assert again.num_steps == 1 and again.num_slots("fc") == 5


def test_fp16_store(tmp_path):
    _, k, v = _store(tmp_path, dtype="float16")
    shard = DualStore.open(tmp_path / "s").shards(0)[0]
    assert shard.keys.dtype == np.float16
    np.testing.assert_allclose(shard.keys, k, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(shard.vnorm, np.linalg.norm(v, axis=1), rtol=1e-6)  # norms from fp32 values


def test_refuses_to_overwrite_and_bad_steps(tmp_path):
    store, k, v = _store(tmp_path)
    with pytest.raises(StoreError, match="overwrite=True"):
        DualStore.create(tmp_path / "s", list(store.layers.values()))
    with pytest.raises(StoreError, match="continue at step 1"):
        store.append([{"step": 5, "groups": [], "params": {}}], {})
    with pytest.raises(StoreError, match="no dual-form store"):
        DualStore.open(tmp_path / "nothing")


def test_truncated_shard_is_detected(tmp_path):
    _store(tmp_path)
    path = next((tmp_path / "s" / "shards").glob("*.keys"))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 4)
    with pytest.raises(CorruptShardError, match="truncated"):
        DualStore.open(tmp_path / "s")


def test_corrupt_shard_is_detected(tmp_path):
    _store(tmp_path)
    path = next((tmp_path / "s" / "shards").glob("*.values"))
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    store = DualStore.open(tmp_path / "s")                  # sizes fine: opens
    with pytest.raises(CorruptShardError, match="checksum mismatch"):
        store.shards(0)[0].values                            # first read checks the CRC
    with pytest.raises(CorruptShardError, match="checksum mismatch"):
        DualStore.open(tmp_path / "s", verify="full")


_TRAIN = textwrap.dedent('''
    import sys, time, torch, torch.nn.functional as F
    from torch import nn
    from qimia.dual.recorder import DualRecorder
    path, steps, resume, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 4, 0.7)
    rec = DualRecorder(model, opt, path, flush_every=2, resume=resume, state_objects={"sched": sched})
    x, y = torch.randn(50, 6, generator=torch.Generator().manual_seed(1)), torch.arange(50) % 3
    for step in range(rec.step, steps):
        idx = torch.randperm(50, generator=torch.Generator().manual_seed(step))[:10]
        rec.set_batch(idx, y[idx])
        loss = F.cross_entropy(model(x[idx]), y[idx]); opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        time.sleep(delay)
    rec.close()
    torch.save(model.state_dict(), path + ".final.pt")
''')


def test_kill_minus_nine_loses_no_committed_shard_and_resumes(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_TRAIN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = lambda path, resume, delay: subprocess.Popen(  # noqa: E731
        [sys.executable, str(script), str(path), "30", resume, delay], env=env)
    # uninterrupted reference
    assert run(tmp_path / "ref", "0", "0").wait(timeout=120) == 0
    # killed run
    proc = run(tmp_path / "killed", "0", "0.1")
    manifest = tmp_path / "killed" / "manifest.json"
    deadline = time.time() + 90
    while time.time() < deadline:
        if manifest.exists() and len(json.loads(manifest.read_text())["steps"]) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = DualStore.open(tmp_path / "killed", verify="full")   # every committed shard is intact
    committed = store.num_steps
    assert 6 <= committed < 30
    assert run(tmp_path / "killed", "1", "0").wait(timeout=120) == 0
    final = torch.load(str(tmp_path / "killed") + ".final.pt")
    ref = torch.load(str(tmp_path / "ref") + ".final.pt")
    store = DualStore.open(tmp_path / "killed", verify="full")
    assert store.num_steps == 30
    for name, spec in store.layers.items():
        W, _ = reconstruct_layer(store, name)
        assert float((W - final[spec.weight].double()).norm() / final[spec.weight].norm()) <= 1e-5
        torch.testing.assert_close(final[spec.weight], ref[spec.weight], rtol=1e-5, atol=1e-6)
