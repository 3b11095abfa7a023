"""Safe files: sha256 of w0.pt, checkpoints and the manifest, weights-only loads, and verify_store."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from qimia.dual.errors import CorruptShardError, StoreError, VerificationError
from qimia.dual.recorder import DualRecorder
from qimia.dual.store import DualStore
from qimia.dual.verify import verify_store


def _recorded(tmp_path, blobs, helpers, **kw):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    helpers.train_recorded(model, opt, tmp_path / "s", x, y, steps=6, flush_every=2, **kw)
    return model, tmp_path / "s"


def _flip_bit(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


class _Payload:
    """Unpickling this object would create ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_good_store_verifies_within_tolerance(tmp_path, blobs, helpers):
    _, path = _recorded(tmp_path, blobs, helpers)
    report = verify_store(path)
    assert report.ok and not report.problems and report.steps == 6
    assert set(report.layers) == {"0", "2", "4"}
    for check in report.layers.values():
        assert check.ok and check.rel_err_weight <= 1e-5 and check.rel_err_bias <= 1e-5
    report.raise_if_failed()
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True


def test_error_above_tolerance_fails_verification(tmp_path, blobs, helpers):
    _, path = _recorded(tmp_path, blobs, helpers)
    report = verify_store(path, tolerance=1e-13)        # fp32 training cannot be this exact
    assert not report.ok and any(not c.ok for c in report.layers.values())
    with pytest.raises(VerificationError, match="tolerance"):
        report.raise_if_failed()


def test_flipped_bit_in_w0_is_detected(tmp_path, blobs, helpers):
    _, path = _recorded(tmp_path, blobs, helpers)
    _flip_bit(path / "w0.pt", (path / "w0.pt").stat().st_size - 200)
    with pytest.raises(CorruptShardError, match="w0.pt"):
        DualStore.open(path, verify="full")
    with pytest.raises(CorruptShardError, match="w0.pt"):
        DualStore.open(path).w0()                        # also checked before every load
    report = verify_store(path)
    assert not report.ok and any("w0.pt" in p for p in report.problems)


def test_edited_learning_rate_in_manifest_is_detected(tmp_path, blobs, helpers):
    _, path = _recorded(tmp_path, blobs, helpers)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["steps"][3]["groups"][0]["lr"] = 0.11
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptShardError, match="manifest.json"):
        DualStore.open(path, verify="size")
    assert not verify_store(path).ok


def test_flipped_bit_in_checkpoint_is_detected_on_resume(tmp_path, blobs, helpers):
    _, path = _recorded(tmp_path, blobs, helpers)
    ckpt = path / json.loads((path / "manifest.json").read_text())["checkpoint"]
    _flip_bit(ckpt, ckpt.stat().st_size // 2)
    with pytest.raises(CorruptShardError, match="checkpoint"):
        DualStore.open(path, verify="full")
    model = helpers.mlp()
    with pytest.raises(CorruptShardError, match="checkpoint"):
        DualRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), str(path), resume=True)


def test_crafted_checkpoint_never_runs_code(tmp_path, blobs, helpers):
    """A checkpoint holding a pickle payload, with matching checksums, is refused without running it."""
    _, path = _recorded(tmp_path, blobs, helpers)
    manifest = json.loads((path / "manifest.json").read_text())
    marker = tmp_path / "pwned"
    ckpt = path / manifest["checkpoint"]
    torch.save({"step": 6, "model": _Payload(marker)}, ckpt)
    manifest["checkpoint_sha256"] = hashlib.sha256(ckpt.read_bytes()).hexdigest()   # a consistent forgery
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    manifest["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="weights_only"):
        DualStore.open(path).load_checkpoint()
    model = helpers.mlp()
    with pytest.raises(StoreError, match="weights_only"):
        DualRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), str(path), resume=True)
    report = verify_store(path)
    assert not report.ok
    assert not marker.exists()


def test_keys_only_store_verifies_checksums_only(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    helpers.train_recorded(model, torch.optim.Adam(model.parameters(), 1e-3), tmp_path / "s", x, y, steps=3,
                           keys_only=True)
    report = verify_store(tmp_path / "s")
    assert report.ok and report.layers == {}


def test_missing_store_is_a_failed_report(tmp_path):
    report = verify_store(tmp_path / "nothing")
    assert not report.ok and "manifest.json missing" in report.problems[0]


def test_float16_store_gets_its_own_default_tolerance(tmp_path, blobs, helpers):
    _, path = _recorded(tmp_path, blobs, helpers, dtype="float16")
    report = verify_store(path)
    assert report.tolerance == 1e-2 and report.ok
    worst = max(c.rel_err_weight for c in report.layers.values())
    assert 1e-5 < worst <= 1e-2                        # rounded keys and values: above the fp32 tolerance
    assert not verify_store(path, tolerance=1e-5).ok
