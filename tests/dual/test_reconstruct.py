"""Exactness: W_T from W0 + memory, and the dual forward equals the primal forward (fp32 rel. err <= 1e-5)."""

from __future__ import annotations

import pytest
import torch

from qimia.dual.reconstruct import dual_forward, reconstruct_layer, reconstruct_model
from qimia.dual.store import TASK, DualStore

SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "momentum_dampening": dict(lr=0.05, momentum=0.8, dampening=0.3),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.05),
    "everything": dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "maximize": dict(lr=0.05, momentum=0.5, weight_decay=0.01, maximize=True),
    "foreach": dict(lr=0.05, momentum=0.9, weight_decay=0.01, foreach=True),
}


def _check_model(model: torch.nn.Module, store: DualStore, helpers, tol: float = 1e-5) -> None:
    for name in store.layer_names:
        mod = model.get_submodule(name)
        W, b = reconstruct_layer(store, name)
        assert helpers.rel_err(W, mod.weight) <= tol, name
        assert helpers.rel_err(b, mod.bias) <= tol, name


@pytest.mark.parametrize("case", sorted(SGD_CASES))
def test_reconstruct_sgd_variants(tmp_path, blobs, case, helpers):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), **SGD_CASES[case])
    sign = -1.0 if SGD_CASES[case].get("maximize") else 1.0  # maximize -CE = minimise CE
    helpers.train_recorded(model, opt, tmp_path / "s", x, y, steps=30, loss_sign=sign)
    _check_model(model, DualStore.open(tmp_path / "s"), helpers)


def test_reconstruct_clipping_and_schedule(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=40)
    rec = helpers.train_recorded(model, opt, tmp_path / "s", x, y, steps=40, clip=0.5, sched=sched)
    scales = [v[1] for rec_ in rec.store.steps for v in rec_["params"].values() if v]
    assert min(scales) < 0.99, "the test must actually clip"
    lrs = {rec_["groups"][0]["lr"] for rec_ in rec.store.steps}
    assert len(lrs) > 10, "the schedule must change the learning rate"
    _check_model(model, rec.store, helpers)


def test_param_groups_without_bias_decay(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "lr": 0.02}],
                          lr=0.1, momentum=0.9)
    rec = helpers.train_recorded(model, opt, tmp_path / "s", x, y, steps=25)
    _check_model(model, rec.store, helpers)


def test_recurrent_cell_records_every_use(tmp_path, helpers):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 6, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    model = helpers.TinyCell()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    rec = helpers.train_recorded(model, opt, tmp_path / "s", x, y, steps=20, batch=8, clip=1.0, check_gradients=True)
    store = rec.store
    assert store.num_slots("cell") == 20 * 8 * 6     # T = 6 uses per forward
    assert store.num_slots("head") == 20 * 8
    assert set(store.meta("cell")[:, 4]) == set(range(6))
    _check_model(model, store, helpers)


def test_dual_forward_equals_primal(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    rec = helpers.train_recorded(model, opt, tmp_path / "s", x, y, steps=30)
    q = torch.randn(9, 10)
    primal = model[0](q)
    for chunk in (7, 65536):    # many small blocks and one big block give the same answer
        dual = dual_forward(rec.store, 0, q, chunk_rows=chunk)
        assert helpers.rel_err(dual.detach(), primal.detach()) <= 1e-5
    dual64 = dual_forward(rec.store, 0, q.double())
    assert dual64.dtype == torch.float64 and helpers.rel_err(dual64, primal.detach()) <= 1e-5


def test_fp64_reconstruction_is_tighter(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = helpers.train_recorded(model, opt, tmp_path / "s", x, y, steps=30)
    W64, _ = reconstruct_layer(rec.store, "4", dtype=torch.float64)   # store layer 2 = model[4]
    W32, _ = reconstruct_layer(rec.store, 2, dtype=torch.float32)
    assert W64.dtype == torch.float64 and W32.dtype == torch.float32
    assert helpers.rel_err(W64, model[4].weight) <= 1e-6 and helpers.rel_err(W32, W64) <= 1e-5


def test_masking_later_steps_equals_training_the_leading_steps_plain_sgd(tmp_path, blobs, helpers):
    """With plain SGD, dropping task 1's slots gives exactly the weights after task 0 (continual)."""
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = helpers.train_recorded(model, opt, tmp_path / "both", x, y, steps=30, task=lambda s: int(s >= 15))
    masked = reconstruct_model(rec.store, model, keep=lambda meta: meta[:, TASK] == 0)
    ref = helpers.mlp()                               # replay task 0 alone with the same batches
    helpers.train_recorded(ref, torch.optim.SGD(ref.parameters(), lr=0.1), tmp_path / "ref", x, y, steps=15)
    for (n, p), (_, q) in zip(masked.named_parameters(), ref.named_parameters()):
        assert helpers.rel_err(p, q) <= 1e-5, n
    assert helpers.rel_err(masked[0].weight, model[0].weight) > 1e-3   # the mask really removed something


def test_keep_mask_shape_is_checked(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    rec = helpers.train_recorded(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path / "s", x, y, steps=3)
    with pytest.raises(ValueError, match="keep mask has shape"):
        reconstruct_layer(rec.store, 0, keep=torch.ones(5, dtype=torch.bool).numpy())
