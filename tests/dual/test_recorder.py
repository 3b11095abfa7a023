"""The recorder: refusals with clear errors, keys-only mode, metadata, accumulation, no-grad passes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qimia.dual.errors import DualFormError, UnsupportedOptimizerError
from qimia.dual.explain import DualExplainer
from qimia.dual.recorder import DualRecorder
from qimia.dual.reconstruct import reconstruct_layer
from qimia.dual.store import LABEL, POS


@pytest.mark.parametrize("opt_cls", [torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad])
def test_adaptive_optimizers_are_refused(tmp_path, helpers, opt_cls):
    model = helpers.mlp()
    with pytest.raises(UnsupportedOptimizerError, match="keys_only=True"):
        DualRecorder(model, opt_cls(model.parameters()), str(tmp_path / "s"))


def test_keys_only_mode_with_adam_is_labelled_approximate(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    rec = helpers.train_recorded(model, torch.optim.Adam(model.parameters(), 1e-3), tmp_path / "s", x, y,
                                 steps=5, keys_only=True)
    store = rec.store
    assert store.keys_only and store.num_slots(0) == 5 * 16
    with pytest.raises(Exception, match="keys-only"):
        reconstruct_layer(store, 0)
    ex = DualExplainer(store, 0)
    assert ex.score == "key"
    e = ex.explain(x[:3], k=4, num_classes=3)
    assert e.approximate
    brute = (x[:3] @ torch.from_numpy(store.shards(0)[0].keys[:].copy()).T).abs()
    torch.testing.assert_close(e.topk_scores, brute.topk(4).values)


@pytest.mark.parametrize("tamper", ["clip_value", "sign_flip", "noise"])
def test_non_scalar_gradient_changes_have_no_exact_form(tmp_path, blobs, helpers, tamper):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = DualRecorder(model, opt, str(tmp_path / "s"))
    F.cross_entropy(model(x[:8]), y[:8]).backward()
    if tamper == "clip_value":
        torch.nn.utils.clip_grad_value_(model.parameters(), 1e-3)
    elif tamper == "sign_flip":
        model[0].weight.grad.neg_()
    else:
        model[0].weight.grad.add_(1e-3 * torch.randn_like(model[0].weight.grad))
    with pytest.raises(DualFormError, match="more than a scalar"):
        opt.step()
    rec.close()


def test_shared_weight_between_modules_is_refused(tmp_path):
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    with pytest.raises(DualFormError, match="share one weight"):
        DualRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), str(tmp_path / "s"))


def test_unknown_layer_and_missing_parameters(tmp_path, helpers):
    model = helpers.mlp()
    with pytest.raises(ValueError, match="not trainable nn.Linear"):
        DualRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), str(tmp_path / "s"), layers=["1"])
    with pytest.raises(DualFormError, match="no optimizer param group"):
        DualRecorder(model, torch.optim.SGD(model[0].parameters(), lr=0.1), str(tmp_path / "t"))


def test_rows_must_be_batch_first(tmp_path):
    model = nn.Linear(3, 2)
    rec = DualRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), str(tmp_path / "s"))
    rec.set_batch(torch.arange(4))
    with pytest.raises(DualFormError, match="batch-first"):
        model(torch.randn(5, 3))


def test_sequence_inputs_get_positions_and_per_token_labels(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = DualRecorder(model, opt, str(tmp_path / "s"))
    x, tgt = torch.randn(2, 4, 3), torch.randint(0, 5, (2, 4))      # (B, T, d), per-token labels
    rec.set_batch(torch.tensor([10, 11]), labels=tgt)
    F.cross_entropy(model(x).reshape(-1, 5), tgt.reshape(-1)).backward()
    opt.step()
    store = rec.close()
    meta = store.meta(0)
    assert meta[:, 1].tolist() == [10] * 4 + [11] * 4
    assert meta[:, POS].tolist() == [0, 1, 2, 3] * 2
    assert meta[:, LABEL].tolist() == tgt.reshape(-1).tolist()


def test_gradient_accumulation_and_no_grad_passes(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = DualRecorder(model, opt, str(tmp_path / "s"), check_gradients=True)
    for step in range(6):
        opt.zero_grad()
        for micro in range(2):                     # two backward passes per step
            idx = torch.arange(8) + 16 * step + 8 * micro
            rec.set_batch(idx, y[idx])
            (F.cross_entropy(model(x[idx]), y[idx]) / 2).backward()
        with torch.no_grad():
            model(x[:50])                          # evaluation: not recorded
        with rec.paused():
            model(x[:50]).sum()                    # grad enabled but paused: not recorded
        opt.step()
    store = rec.close()
    assert store.num_slots(0) == 6 * 16
    W, _ = reconstruct_layer(store, 0)
    assert helpers.rel_err(W, model[0].weight) <= 1e-5


def test_lightning_callback_is_exact(tmp_path, blobs, helpers):
    L = pytest.importorskip("lightning.pytorch")
    from qimia.dual.lightning import DualRecorderCallback

    x, y = blobs

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = helpers.mlp()

        def training_step(self, batch, i):
            xb, yb, _ = batch
            return F.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)]

    data = torch.utils.data.TensorDataset(x, y, torch.arange(len(x)))
    loader = torch.utils.data.DataLoader(data, batch_size=20, shuffle=True)
    cb = DualRecorderCallback(str(tmp_path / "s"), batch_meta=lambda b, i: (b[2], b[1], 0))
    module = Module()
    trainer = L.Trainer(max_steps=12, callbacks=[cb], gradient_clip_val=0.3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(module, loader)
    store = cb.store
    assert store.num_steps == 12
    assert min(v[1] for s in store.steps for v in s["params"].values() if v) < 0.99   # clipping happened
    for name in store.layer_names:
        W, b = reconstruct_layer(store, name)
        mod = module.get_submodule(name)
        assert helpers.rel_err(W, mod.weight) <= 1e-5 and helpers.rel_err(b, mod.bias) <= 1e-5
    with pytest.raises(TypeError, match="unknown DualRecorderCallback arguments"):
        DualRecorderCallback("x", batch_meta=None, bogus=1)


def _skip_step_loop(model: nn.Module, opt: torch.optim.Optimizer, rec: DualRecorder, x: torch.Tensor,
                    y: torch.Tensor, order: str, steps: int = 4, skip: int = 1) -> None:
    """SGD loop whose step ``skip`` runs forward and backward but never calls ``opt.step()``."""
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(x), (8,), generator=g)
        rec.set_batch(idx, labels=y[idx])
        if order == "zero_first":
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
        elif order == "forward_first":        # forward, then zero_grad, then backward
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
        else:                                 # model.zero_grad(set_to_none=False)
            model.zero_grad(set_to_none=False)
            loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        if step == skip:                      # e.g. a non-finite loss or a GradScaler skip
            continue
        opt.step()


@pytest.mark.parametrize("order", ["zero_first", "forward_first", "model_zero_grad"])
def test_backward_without_step_is_not_recorded(tmp_path, helpers, order):
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    rec = DualRecorder(model, opt, str(tmp_path / "s"))
    _skip_step_loop(model, opt, rec, x, y, order)
    store = rec.close()
    assert store.num_steps == 3 and store.num_slots(0) == 3 * 8
    for i, mod in enumerate([model[0], model[2]]):
        W, b = reconstruct_layer(store, i)
        assert helpers.rel_err(W, mod.weight) <= 1e-6 and helpers.rel_err(b, mod.bias) <= 1e-6
    assert "zero_grad" not in vars(opt) and "zero_grad" not in vars(model)     # unwrapped by close()


def test_discarded_uses_keep_use_numbering(tmp_path, blobs, helpers):
    x, y = blobs
    seq = x[:, :10].reshape(200, 2, 5)                                # (B, T=2, d_in=5)
    model = helpers.TinyCell()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = DualRecorder(model, opt, str(tmp_path / "s"), check_gradients=True)
    _skip_step_loop(model, opt, rec, seq, y, "forward_first")
    store = rec.close()
    assert store.meta("cell")[:, 4].tolist() == ([0] * 8 + [1] * 8) * 3
    W, _ = reconstruct_layer(store, "cell")
    assert helpers.rel_err(W, model.cell.weight) <= 1e-6


def test_training_in_eval_mode_is_recorded(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp().eval()
    rec = helpers.train_recorded(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path / "s", x, y, steps=4)
    assert rec.store.num_slots(0) == 4 * 16
    W, _ = reconstruct_layer(rec.store, 0)
    assert helpers.rel_err(W, model[0].weight) <= 1e-6


def test_gradient_without_recorded_forward_is_refused(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = DualRecorder(model, opt, str(tmp_path / "s"))
    with rec.paused():
        loss = F.cross_entropy(model(x[:8]), y[:8])
    loss.backward()
    with pytest.raises(DualFormError, match="none of its forward passes was recorded"):
        opt.step()
    rec.close()


def test_unused_layer_with_zeroed_gradient_is_a_zero_update(tmp_path, helpers):
    """Multi-head training with ``zero_grad(set_to_none=False)``: the idle head still decays."""
    torch.manual_seed(0)
    trunk, heads = nn.Linear(6, 8), nn.ModuleList([nn.Linear(8, 3), nn.Linear(8, 3)])
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-2)
    rec = DualRecorder(model, opt, str(tmp_path / "s"))
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    for step in range(6):
        head = 1 if step % 3 == 2 else 0           # head 1 idle in most steps, head 0 every third
        idx = torch.arange(8) + 4 * step
        rec.set_batch(idx, labels=y[idx], task=head)
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(heads[head](torch.relu(trunk(x[idx]))), y[idx]).backward()
        opt.step()
    store = rec.close()
    for name in ["trunk", "heads.0", "heads.1"]:
        W, b = reconstruct_layer(store, name)
        mod = model.get_submodule(name)
        assert helpers.rel_err(W, mod.weight) <= 1e-6 and helpers.rel_err(b, mod.bias) <= 1e-6


@pytest.mark.parametrize("skip", [None, 2])
def test_grad_scaler_unscale_and_skipped_step(tmp_path, helpers, skip):
    """GradScaler's unscale_ edits .grad in place without bumping its version; a non-finite step is skipped."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    rec = DualRecorder(model, opt, str(tmp_path / "s"))
    for step in range(5):
        idx = torch.arange(8) + 8 * step
        rec.set_batch(idx, labels=y[idx])
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        scaler.scale(loss * float("inf") if step == skip else loss).backward()
        scaler.step(opt)
        scaler.update()
    store = rec.close()
    assert store.num_steps == (5 if skip is None else 4)
    for i, mod in enumerate([model[0], model[2]]):
        W, b = reconstruct_layer(store, i)
        assert helpers.rel_err(W, mod.weight) <= 1e-6 and helpers.rel_err(b, mod.bias) <= 1e-6
