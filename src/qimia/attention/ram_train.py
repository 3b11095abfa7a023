"""Train the Recurrent Attention Model on MNIST (28x28), translated MNIST (60x60) or sklearn digits.

    qimia memory ram data=mnist epochs=2 glimpses=6
    qimia memory ram data=mnist translated=true canvas=60 patch=12 scales=3 epochs=2

``data=mnist`` reads ``data_path`` (the pickled 50k/10k/10k MNIST; ``/work/shared/data/mnist.pkl.gz``
by default) and, if it is missing, falls back to ``torchvision.datasets.MNIST(download=True)``.
``translated=true`` places each digit at a random position of a ``canvas x canvas`` image, a new
position each epoch (seeded; works with either data set). ``data=digits`` uses
``sklearn.datasets.load_digits`` (8x8, offline; for tests). Test error uses the policy mean (no
sampling). Checkpoints every epoch; ``resume=<path>`` continues (the checkpoint is read with
:func:`qimia.memory.train.load_checkpoint` and must match this run on ``RAM_RESUME_KEYS``).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from qimia.attention.ram import RAMConfig, RecurrentAttentionModel, ram_loss, translate_digits
from qimia.memory.train import check_resume_config, load_checkpoint

DEFAULT_MNIST = "/work/shared/data/mnist.pkl.gz"
# a resumed run must match the checkpoint on these (model shape, glimpse policy and data)
RAM_RESUME_KEYS = ["data", "translated", "canvas", "patch", "scales", "hidden", "glimpses", "std"]
RAM_CHECKPOINT_KEYS = ("model", "optimizer", "generator", "config", "curve", "epoch")


@dataclass
class RAMTrainConfig:
    data: str = "mnist"  # mnist | digits
    data_path: str = DEFAULT_MNIST
    translated: bool = False  # place digits at random positions of a canvas x canvas image
    canvas: int = 60
    epochs: int = 1
    batch_size: int = 64
    lr: float = 3e-4
    glimpses: int = 6
    patch: int = 8
    scales: int = 1
    hidden: int = 256
    std: float = 0.1
    train_limit: int = 0  # use only the first n training images (0: all)
    seed: int = 0
    threads: int = 0
    device: str = "cpu"
    out: str = "runs/memory/ram"
    resume: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.data not in ("mnist", "digits"):
            raise ValueError(f"unknown data {self.data!r}; choose mnist or digits")
        for name in ("epochs", "batch_size", "glimpses", "patch", "scales", "hidden", "canvas"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_limit < 0:
            raise ValueError(f"train_limit must be >= 0 (0: all images), got {self.train_limit}")
        if not (self.lr > 0 and self.std > 0):
            raise ValueError(f"lr and std must be > 0, got lr={self.lr}, std={self.std}")


def load_data(cfg: RAMTrainConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns train images ``(N, 1, H, W)``, labels ``(N,)``, test images, test labels."""
    if cfg.data == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
        y = torch.tensor(d.target)
        return x[:1500], y[:1500], x[1500:], y[1500:]
    if os.path.exists(cfg.data_path):
        with gzip.open(cfg.data_path) as f:
            (xtr, ytr), _, (xte, yte) = pickle.load(f, encoding="latin1")
        to = lambda a: torch.as_tensor(a, dtype=torch.float32).view(-1, 1, 28, 28)  # noqa: E731
        return to(xtr), torch.as_tensor(ytr).long(), to(xte), torch.as_tensor(yte).long()
    from torchvision.datasets import MNIST  # real loader for users; tests never reach it

    root = Path.home() / ".cache" / "qimia"
    tr, te = MNIST(root, train=True, download=True), MNIST(root, train=False, download=True)
    return (tr.data.float().unsqueeze(1) / 255, tr.targets, te.data.float().unsqueeze(1) / 255, te.targets)


@torch.no_grad()
def test_error(model: RecurrentAttentionModel, x: Tensor, y: Tensor, batch: int, device: str) -> float:
    model.eval()
    wrong = 0
    gen = torch.Generator().manual_seed(0)
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(device)
        logits = model(xb, sample=False, state=model.initial_state(xb, gen))[0]
        wrong += (logits.argmax(-1).cpu() != y[i : i + batch]).sum().item()
    model.train()
    return wrong / len(x)


def train_ram(cfg: RAMTrainConfig) -> dict:
    """Train; returns ``{"test_error", "curve", "parameters", ...}`` and writes ``results.json`` and plots."""
    from tqdm.auto import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    xtr, ytr, xte, yte = load_data(cfg)
    if cfg.train_limit:
        xtr, ytr = xtr[: cfg.train_limit], ytr[: cfg.train_limit]
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.translated:
        xte = translate_digits(xte, cfg.canvas, torch.Generator().manual_seed(10_000))
    model = RecurrentAttentionModel(RAMConfig(patch=cfg.patch, scales=cfg.scales, hidden=cfg.hidden,
                                              glimpses=cfg.glimpses, std=cfg.std)).to(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    curve, start_epoch = [], 0
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume, RAM_CHECKPOINT_KEYS, kind="qimia RAM")
        check_resume_config(ckpt["config"], cfg, RAM_RESUME_KEYS)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        curve, start_epoch = ckpt["curve"], ckpt["epoch"]
    t0 = time.perf_counter() - (curve[-1]["seconds"] if curve else 0.0)  # seconds accumulate across resumes
    for epoch in range(start_epoch, cfg.epochs):
        xe = translate_digits(xtr, cfg.canvas, gen) if cfg.translated else xtr
        perm = torch.randperm(len(xe), generator=gen)
        bar = tqdm(range(0, len(xe), cfg.batch_size), desc=f"RAM epoch {epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress)
        sums = torch.zeros(4)
        for i in bar:
            idx = perm[i : i + cfg.batch_size]
            logits, log_probs, baselines, _ = model(xe[idx].to(cfg.device))
            loss = ram_loss(logits, ytr[idx].to(cfg.device), log_probs, baselines)
            opt.zero_grad(set_to_none=True)
            loss.total.backward()
            opt.step()
            sums += torch.tensor([loss.classification.item(), loss.reward.item(), loss.baseline.item(), 1.0])
            if (i // cfg.batch_size) % 50 == 0:
                bar.set_postfix(nll=f"{sums[0] / sums[3]:.3f}", acc=f"{sums[1] / sums[3]:.3f}")
        err = test_error(model, xte, yte, 500, cfg.device)
        curve.append({"epoch": epoch + 1, "train_nll": (sums[0] / sums[3]).item(),
                      "train_acc": (sums[1] / sums[3]).item(), "baseline_mse": (sums[2] / sums[3]).item(),
                      "test_error": err, "seconds": time.perf_counter() - t0})
        tmp = out / "checkpoint.tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                    "curve": curve, "epoch": epoch + 1, "config": dataclasses.asdict(cfg)}, tmp)
        os.replace(tmp, out / "checkpoint.pt")
    result = {"config": dataclasses.asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
              "test_error": curve[-1]["test_error"] if curve else None, "curve": curve}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    plot_glimpses(model, xte[:6], out / "glimpses.png")
    plot_ram_curve(curve, out / "curve.png")
    return result


def plot_ram_curve(curve: list[dict], path: Path) -> None:
    """Test error and training accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curve:
        return
    epochs = [c["epoch"] for c in curve]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [c["test_error"] for c in curve], "o-", label="test error (policy mean)")
    ax.plot(epochs, [1 - c["train_acc"] for c in curve], "o-", alpha=0.6, label="train error (sampled glimpses)")
    ax.set(xlabel="epoch", ylabel="error", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@torch.no_grad()
def plot_glimpses(model: RecurrentAttentionModel, images: Tensor, path: Path) -> None:
    """The glimpse path (policy mean) over a few test images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    device = next(model.parameters()).device
    x = images.to(device)
    logits, _, _, locs = model(x, sample=False, state=model.initial_state(x, torch.Generator().manual_seed(0)))
    model.train()
    H, W = images.shape[-2:]
    fig, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.4))
    for ax, img, loc, pred in zip(axes, images, locs.cpu(), logits.argmax(-1).cpu()):
        ax.imshow(img[0].numpy(), cmap="gray")
        px = ((loc[:, 0] + 1) * W / 2 - 0.5).numpy()  # normalised -> pixel
        py = ((loc[:, 1] + 1) * H / 2 - 0.5).numpy()
        ax.plot(px, py, "-o", c="tab:red", ms=3)
        ax.plot(px[:1], py[:1], "o", c="tab:green", ms=5)
        ax.set_title(f"pred {pred.item()}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
