"""No silent wrong answers: tied and functional uses, autocast, weight edits, and clipping on small outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qimia.dual.errors import DualFormError
from qimia.dual.recorder import DualRecorder
from qimia.dual.reconstruct import reconstruct_layer


class TiedLM(nn.Module):
    """Embedding and output layer share one weight (standard LM weight tying)."""

    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(ids))))


class FunctionalReuse(nn.Module):
    """``fc``'s weight is also applied with ``F.linear``, outside the module (no hook sees that use)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(40, 40)          # 1600 weights: more than the 256 slot-probe coordinates
        self.head = nn.Linear(40, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(x))
        return self.head(torch.tanh(F.linear(h, self.fc.weight)))


@pytest.mark.parametrize("layers", [None, ["head"]])
def test_weight_tied_to_an_embedding_is_refused(tmp_path, layers):
    model = TiedLM()
    with pytest.raises(DualFormError, match="embed.*head|head.*embed"):
        DualRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), str(tmp_path / "s"), layers=layers)


def test_functional_use_of_a_recorded_weight_is_detected_by_default(tmp_path):
    torch.manual_seed(0)
    model = FunctionalReuse()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = DualRecorder(model, opt, str(tmp_path / "s"))
    x, y = torch.randn(8, 40), torch.randint(0, 3, (8,))
    rec.set_batch(torch.arange(8), labels=y)
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(DualFormError, match="fc.*outside the module"):
        opt.step()
    rec.close()


def test_functional_use_after_the_first_steps_is_detected_by_the_probe(tmp_path):
    """The full check covers the first steps; the 4096-coordinate probe runs on every step."""
    torch.manual_seed(0)
    model = FunctionalReuse()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = DualRecorder(model, opt, str(tmp_path / "s"), exact_check_steps=0)
    x, y = torch.randn(8, 40), torch.randint(0, 3, (8,))
    rec.set_batch(torch.arange(8), labels=y)
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(DualFormError, match="outside the module"):
        opt.step()
    rec.close()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_autocast_is_refused(tmp_path, helpers, dtype):
    model = helpers.mlp()
    rec = DualRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), str(tmp_path / "s"))
    with torch.autocast("cpu", dtype=dtype), pytest.raises(DualFormError, match="autocast"):
        model(torch.randn(4, 10))
    rec.close()


def test_low_precision_parameters_are_refused(tmp_path, helpers):
    model = helpers.mlp().to(torch.bfloat16)
    with pytest.raises(DualFormError, match="bfloat16"):
        DualRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), str(tmp_path / "s"))


@pytest.mark.parametrize("edit", ["renorm", "data_clamp", "before_first_step"])
def test_weight_edit_between_steps_is_detected(tmp_path, blobs, helpers, edit):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    rec = DualRecorder(model, opt, str(tmp_path / "s"))
    if edit == "before_first_step":
        with torch.no_grad():
            model[0].weight.mul_(2.0)                  # after W_0 was saved
    with pytest.raises(DualFormError, match=r"0\.weight was changed outside optimizer.step"):
        for step in range(3):
            rec.set_batch(torch.arange(16), labels=y[:16])
            opt.zero_grad()
            F.cross_entropy(model(x[:16]), y[:16]).backward()
            opt.step()
            if edit == "renorm":                       # a max-norm constraint
                with torch.no_grad():
                    model[0].weight.renorm_(2, 0, 0.1)
            elif edit == "data_clamp":                 # .data edits do not bump the version counter
                model[0].weight.data.clamp_(-0.05, 0.05)
    rec.close()


def test_weight_edit_before_close_is_detected(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    rec = DualRecorder(model, opt, str(tmp_path / "s"))
    rec.set_batch(torch.arange(16), labels=y[:16])
    F.cross_entropy(model(x[:16]), y[:16]).backward()
    opt.step()
    with torch.no_grad():
        model[4].weight.renorm_(2, 0, 0.1)
    with pytest.raises(DualFormError, match="changed outside optimizer.step"):
        rec.close()


@pytest.mark.parametrize("classes", [2, 5])
def test_global_norm_clipping_on_a_small_output_layer_is_exact(tmp_path, helpers, classes):
    """Softmax-CE makes the output bias gradient sum to ~0: the clipping detector must not rely on sums."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(120, 10, generator=g), torch.randint(0, classes, (120,), generator=g)
    model = helpers.mlp(classes=classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    rec = helpers.train_recorded(model, opt, tmp_path / "s", x, y, steps=15, clip=0.05)
    scales = [v[1] for s in rec.store.steps for v in s["params"].values() if v]
    assert max(scales) < 0.99, "the test must clip in every step"
    for name in rec.store.layer_names:
        W, b = reconstruct_layer(rec.store, name)
        mod = model.get_submodule(name)
        assert helpers.rel_err(W, mod.weight) <= 1e-5 and helpers.rel_err(b, mod.bias) <= 1e-5


def test_gradient_cleared_by_hand_after_a_skipped_step_is_detected(tmp_path, blobs, helpers):
    """``p.grad = None`` bypasses the wrapped zero_grad: the stale slots no longer sum to the gradient."""
    x, y = blobs
    model = helpers.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = DualRecorder(model, opt, str(tmp_path / "s"), exact_check_steps=0)
    rec.set_batch(torch.arange(16), labels=y[:16])
    F.cross_entropy(model(x[:16]), y[:16]).backward()           # its step() never comes
    for p in model.parameters():
        p.grad = None
    rec.set_batch(torch.arange(16, 32), labels=y[16:32])
    F.cross_entropy(model(x[16:32]), y[16:32]).backward()
    with pytest.raises(DualFormError, match="not the sum of the recorded slots"):
        opt.step()
    rec.close()


def test_lightning_bf16_mixed_precision_is_refused(tmp_path, blobs, helpers):
    L = pytest.importorskip("lightning.pytorch")
    from qimia.dual.lightning import DualRecorderCallback

    x, y = blobs

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = helpers.mlp()

        def training_step(self, batch, i):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, torch.arange(len(x))), batch_size=20)
    cb = DualRecorderCallback(str(tmp_path / "s"), batch_meta=lambda b, i: (b[2], b[1], 0))
    trainer = L.Trainer(max_steps=2, callbacks=[cb], precision="bf16-mixed", logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    module = Module()
    with pytest.raises(DualFormError, match="autocast"):
        trainer.fit(module, loader)
    assert not module.net[0]._forward_hooks and cb.store.num_steps == 0     # detached; nothing recorded

