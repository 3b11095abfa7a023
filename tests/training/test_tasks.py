import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from qimia.training import ClassificationModule, DenoisingModule, LanguageModelModule


def test_classification_metrics_match_a_manual_evaluation(adam, image_loader, trainer_factory, tiny_classifier):
    net = tiny_classifier()
    module = ClassificationModule(net, num_classes=3, optimizer=adam)
    (metrics,) = trainer_factory().test(module, image_loader, verbose=False)
    x, y = image_loader.dataset.tensors
    with torch.no_grad():
        logits = net(x)
    assert metrics["test/acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item(), abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert "net" not in module.hparams and module.hparams["num_classes"] == 3


def test_classification_trains(adam, image_loader, trainer_factory, tiny_classifier):
    module = ClassificationModule(tiny_classifier(), num_classes=3, optimizer=adam)
    before = trainer_factory().test(module, image_loader, verbose=False)[0]["test/loss"]
    trainer_factory(max_epochs=15).fit(module, image_loader)
    after = trainer_factory().test(module, image_loader, verbose=False)[0]["test/loss"]
    assert after < before * 0.8


class Bigram(nn.Module):
    task = "language_modeling"

    def __init__(self, vocab: int = 7) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, tokens):
        return self.table(tokens)  # (B, T, V)


def test_language_model_loss_perplexity_and_bits_per_character(adam, trainer_factory):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 7, (10, 9), generator=g)
    loader = DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=3)  # unequal last batch
    net = Bigram()
    module = LanguageModelModule(net, chars_per_token=2.5, optimizer=adam)
    (metrics,) = trainer_factory().test(module, loader, verbose=False)
    with torch.no_grad():
        nats = F.cross_entropy(net(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).item()
    assert metrics["test/loss"] == pytest.approx(nats, rel=1e-5)  # token-weighted over all batches
    assert metrics["test/ppl"] == pytest.approx(math.exp(nats), rel=1e-5)
    assert metrics["test/bpc"] == pytest.approx(nats / (math.log(2) * 2.5), rel=1e-5)
    with pytest.raises(ValueError, match="chars_per_token"):
        LanguageModelModule(net, chars_per_token=0, optimizer=adam)


def test_language_model_scores_only_targets_that_are_not_ignored(adam, trainer_factory):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 7, (10, 9), generator=g)
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    keep = torch.rand(targets.shape, generator=g) < 0.3
    keep[:3] = True  # unequal numbers of scored targets per batch: a per-token weighting differs
    targets[~keep] = -100
    net = Bigram()
    with torch.no_grad():
        net.table.weight.copy_(3 * torch.randn(7, 7, generator=g))  # confident: losses vary per batch
        logits = net(inputs)
    nats = F.cross_entropy(logits[keep], targets[keep]).item()
    acc = (logits[keep].argmax(-1) == targets[keep]).float().mean().item()
    # what counting the ignored targets would report: all targets, or batch means weighted by numel()
    everything = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).item()
    per_batch = [F.cross_entropy(logits[i : i + 3][keep[i : i + 3]], targets[i : i + 3][keep[i : i + 3]]).item()
                 for i in range(0, 10, 3)]
    by_numel = sum(loss * targets[i : i + 3].numel() for loss, i in zip(per_batch, range(0, 10, 3))) / targets.numel()
    assert min(abs(nats - everything), abs(nats - by_numel)) > 0.1 and acc > 0.05  # (acc over all: acc * 0.54)
    module = LanguageModelModule(net, optimizer=adam)
    (metrics,) = trainer_factory().test(module, DataLoader(TensorDataset(inputs, targets), batch_size=3), verbose=False)
    assert metrics["test/loss"] == pytest.approx(nats, rel=1e-5)  # weighted by scored targets only
    assert metrics["test/bpc"] == pytest.approx(nats / math.log(2), rel=1e-5)
    assert metrics["test/acc"] == pytest.approx(acc, abs=1e-6)
    # the training loss (and so the gradient) ignores them too
    loss = module.step((inputs[:3], targets[:3]), "val")
    assert loss.item() == pytest.approx(F.cross_entropy(logits[:3][keep[:3]], targets[:3][keep[:3]]).item(), rel=1e-5)
    nothing = module.step((inputs[:2], torch.full_like(targets[:2], -100)), "val")
    assert nothing.item() == 0.0  # a batch without a scored target: no loss, not NaN


def test_language_model_accuracy_is_next_token_accuracy_on_plain_text(adam, trainer_factory):
    tokens = torch.randint(0, 7, (6, 9), generator=torch.Generator().manual_seed(2))
    net = Bigram()
    (metrics,) = trainer_factory().test(LanguageModelModule(net, optimizer=adam),
                                        DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=4),
                                        verbose=False)
    with torch.no_grad():
        right = net(tokens[:, :-1]).argmax(-1) == tokens[:, 1:]
    assert metrics["test/acc"] == pytest.approx(right.float().mean().item(), abs=1e-6)


def test_language_model_monitor_choice(adam, trainer_factory, tmp_path):
    assert (LanguageModelModule.monitor, LanguageModelModule.monitor_mode) == ("bpc", "min")  # class defaults
    default = LanguageModelModule(Bigram(), optimizer=adam)
    assert (default.monitor, default.monitor_mode) == ("bpc", "min")
    module = LanguageModelModule(Bigram(), monitor="acc", optimizer=adam)
    assert (module.monitor, module.monitor_mode) == ("acc", "max")
    assert (LanguageModelModule(Bigram(), monitor="loss", optimizer=adam).monitor_mode) == "min"
    assert LanguageModelModule.monitor == "bpc"  # an instance's choice leaves the class alone
    with pytest.raises(ValueError, match=r"monitor must be one of \['bpc', 'acc', 'loss'\], got 'ppl'"):
        LanguageModelModule(Bigram(), monitor="ppl", optimizer=adam)
    # the choice is a saved hyper-parameter and survives a checkpoint (read with weights_only=True)
    tokens = torch.randint(0, 7, (4, 9), generator=torch.Generator().manual_seed(3))
    trainer = trainer_factory(max_epochs=1)
    trainer.fit(module, DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=2))
    path = tmp_path / "lm.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["monitor"] == "acc"
    loaded = LanguageModelModule.load_from_checkpoint(path, net=Bigram(), optimizer=adam)
    assert (loaded.monitor, loaded.monitor_mode) == ("acc", "max")


class Identity(nn.Module):
    task = "denoising"

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


def test_denoising_psnr_ssim(adam, trainer_factory):
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(6, 1, 16, 16, generator=g)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    loader = DataLoader(TensorDataset(noisy, clean), batch_size=4)
    (metrics,) = trainer_factory().test(DenoisingModule(Identity(), optimizer=adam), loader, verbose=False)
    mse = ((noisy.clamp(0, 1) - clean) ** 2).flatten(1).mean(1)
    assert metrics["test/psnr"] == pytest.approx((10 * torch.log10(1 / mse)).mean().item(), rel=1e-4)
    assert metrics["test/psnr"] == pytest.approx(metrics["test/psnr_noisy"], rel=1e-6)  # identity net
    assert 0 < metrics["test/ssim"] < 1
    assert metrics["test/loss"] == pytest.approx(F.mse_loss(noisy, clean).item(), rel=1e-4)


def test_bf16_mixed_really_autocasts(adam, image_loader, trainer_factory, tiny_classifier):
    net = tiny_classifier()
    module = ClassificationModule(net, num_classes=3, optimizer=adam)
    trainer_factory(fast_dev_run=1, precision="bf16-mixed").fit(module, image_loader)
    assert torch.bfloat16 in net.seen_dtypes
    net32 = tiny_classifier()
    trainer_factory(fast_dev_run=1).fit(ClassificationModule(net32, num_classes=3, optimizer=adam), image_loader)
    assert set(net32.seen_dtypes) == {torch.float32}


def test_scheduler_receives_total_steps(adam, image_loader, trainer_factory, tiny_classifier):
    from qimia.training import warmup_cosine

    module = ClassificationModule(
        tiny_classifier(), num_classes=3, optimizer=adam,
        scheduler=functools.partial(warmup_cosine, warmup_fraction=0.25),
    )
    trainer = trainer_factory(max_epochs=2)
    trainer.fit(module, image_loader)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 6  # 3 batches x 2 epochs, stepped per optimizer step
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine reached 0
    onecycle = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1)
    module = ClassificationModule(tiny_classifier(), num_classes=3, optimizer=adam, scheduler=onecycle)
    trainer_factory(max_epochs=1).fit(module, image_loader)  # OneCycleLR would raise without total_steps


def test_plateau_scheduler_steps_once_per_epoch_on_the_validation_monitor(image_loader, trainer_factory, tiny_classifier):
    frozen = functools.partial(torch.optim.SGD, lr=1e-12)  # validation accuracy never improves
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=0)
    module = ClassificationModule(tiny_classifier(), num_classes=3, optimizer=frozen, scheduler=plateau)
    trainer = trainer_factory(max_epochs=3)
    trainer.fit(module, image_loader, image_loader)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.mode == "max"  # val/acc: the monitor's direction, not the scheduler's default
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-14)  # epochs 2 and 3 divide by 10
    wrong_way = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min")
    module = ClassificationModule(tiny_classifier(), num_classes=3, optimizer=frozen, scheduler=wrong_way)
    with pytest.raises(ValueError, match="scheduler.mode='min' but val/acc"):
        trainer_factory(max_epochs=1).fit(module, image_loader, image_loader)


def test_reduce_on_target_drops_the_rate_once_when_the_metric_reaches_the_target():
    from qimia.training import ReduceLROnTarget

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = ReduceLROnTarget(opt, target=0.1)
    lrs = []
    for metric in (0.5, 0.3, 0.1, 0.05, 2.0, 0.0):  # reached at the third evaluation, relapse, reached again
        sched.step(metric)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.1, 0.1]) and sched.reached_at == 3
    resumed = ReduceLROnTarget(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), target=0.1)
    resumed.load_state_dict(sched.state_dict())
    resumed.step(0.0)  # a resumed run does not drop a second time
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.1) and resumed.reached_at == 3
    up = ReduceLROnTarget(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), target=0.9, mode="max")
    up.step(0.8)
    up.step(0.95)
    assert up.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnTarget(opt, target=0.1, factor=1.0)


def test_reduce_on_target_is_stepped_on_the_validation_monitor(image_loader, trainer_factory, tiny_classifier):
    from qimia.training import ReduceLROnTarget

    frozen = functools.partial(torch.optim.SGD, lr=1e-12)
    reached = functools.partial(ReduceLROnTarget, target=0.0)  # val/acc >= 0 at the first evaluation
    module = ClassificationModule(tiny_classifier(), num_classes=3, optimizer=frozen, scheduler=reached)
    trainer = trainer_factory(max_epochs=3)
    trainer.fit(module, image_loader, image_loader)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.mode == "max" and scheduler.reached_at == 1  # the monitor's direction; epoch 1's validation
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-13)  # once, not once per epoch


def test_warmup_cosine_shape():
    from qimia.training import warmup_cosine

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_fraction=0.2, min_lr_ratio=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    with pytest.raises(ValueError, match="warmup_fraction"):
        warmup_cosine(opt, total_steps=10, warmup_fraction=1.0)


@pytest.mark.slow
def test_compile_switch_runs_a_compiled_network(adam, image_loader, trainer_factory, tiny_classifier):
    net = tiny_classifier()
    module = ClassificationModule(net, num_classes=3, optimizer=adam, compile=True)
    assert isinstance(module._forward, torch._dynamo.eval_frame.OptimizedModule)
    trainer_factory(fast_dev_run=1).fit(module, image_loader)
    assert module.compiled
