"""Transfer recipes compared on the same data: QIMIA head vs last-layer head vs linear probe vs fine-tuning.

    python -m qimia.models.transfer_experiment --out /tmp/transfer_mnist

1. A base network (``qimia_resnet20``, width 8) is trained on MNIST digits 0-4.
2. On digits 5-9 with few labels, every recipe trains a new head from the same base, the same
   optimiser (AdamW), budget and data, over several seeds:

   * ``linear_probe``: frozen base, last-layer features + a linear layer;
   * ``transfer_head``: frozen base, last-layer features + a residual MLP head;
   * ``transfer_head (matched)``: the same with its width re-sized to the QIMIA head's count;
   * ``concat_transfer_head``: frozen base, a linear map of *all* blocks' pooled features
     (concatenated) + the residual MLP head: every block, no attention;
   * ``qimia_transfer_head``: frozen base, a QIMIA head reading every block of the base;
   * ``attnres_transfer_head``: the same reads with the attention-residuals preset (keys =
     RMSNorm(values), no key projections);
   * ``fine_tune``: ``transfer_head`` with ``freeze_base=False``.

Writes ``results.json`` and ``results.md`` (mean +- std test accuracy, trainable parameters).
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qimia.models.matching import matched_pair
from qimia.models.registry import create_model
from qimia.models.transfer import TransferHead
from qimia.params import count_parameters

MNIST = "/work/shared/data/mnist.pkl.gz"


def load_split(path: str, digits: range, n_train: int, n_test: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST images of ``digits`` as ``(N, 1, 28, 28)`` and labels relabelled to ``0 .. len(digits)-1``."""
    (xtr, ytr), _, (xte, yte) = pickle.load(gzip.open(path), encoding="latin1")

    def pick(x, y, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = torch.as_tensor(x), torch.as_tensor(y).long()
        keep = (y >= digits.start) & (y < digits.stop)
        x, y = x[keep], y[keep] - digits.start
        order = torch.randperm(len(y), generator=generator)[:n]
        return x[order].view(-1, 1, 28, 28), y[order]  # (N, 1, 28, 28)

    g = torch.Generator().manual_seed(seed)
    return (*pick(xtr, ytr, n_train, g), *pick(xte, yte, n_test, g))


def train(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int, lr: float, batch_size: int, seed: int,
          desc: str) -> None:
    """AdamW on the trainable parameters, cross-entropy, shuffled mini-batches.

    A :class:`TransferHead` with a frozen base is trained on the base's features computed once
    (the frozen base is deterministic in eval mode, so this is the same computation, only faster).
    """
    from tqdm import tqdm

    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    model.train()
    cached = None
    if isinstance(model, TransferHead) and model.freeze_base:
        with torch.no_grad():
            cached = [torch.cat(parts) for parts in zip(*(model.base_features(xb) for xb in x.split(500)))]
    for _ in tqdm(range(epochs), desc=desc, leave=False):
        for idx in torch.randperm(len(y)).split(batch_size):
            logits = model.classify([f[idx] for f in cached]) if cached is not None else model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = sum((model(xb).argmax(-1) == yb).sum().item() for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return correct / len(y)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base_kwargs = {"width": args.base_width, "in_chans": 1, "num_classes": 5}
    # 1. the base, on digits 0-4
    xb, yb, xbt, ybt = load_split(args.data, range(0, 5), args.base_train, 2000, seed=0)
    torch.manual_seed(0)
    base = create_model(args.base, **base_kwargs)
    base_path = out / "base.pt"
    if args.reuse_base and base_path.exists():
        base.load_state_dict(torch.load(base_path, weights_only=True))
    else:
        train(base, xb, yb, epochs=args.base_epochs, lr=2e-3, batch_size=128, seed=0, desc="base")
        torch.save(base.state_dict(), base_path)
    base_accuracy = accuracy(base, xbt, ybt)
    print(f"base {args.base} on digits 0-4: test accuracy {base_accuracy:.4f}")

    # 2. the recipes, on digits 5-9 with few labels
    head = dict(base=args.base, base_kwargs=base_kwargs, base_checkpoint=str(base_path), num_classes=5,
                dim=args.dim, depth=args.depth)
    matched = matched_pair("transfer_head", "qimia_transfer_head", **head)
    recipes: dict[str, tuple[str, dict[str, Any]]] = {
        "linear_probe": ("linear_probe", {"depth": 0}),
        "transfer_head": ("transfer_head", {}),
        "transfer_head (matched)": ("transfer_head", {"dim": matched.value}),
        "concat_transfer_head": ("concat_transfer_head", {}),
        "qimia_transfer_head": ("qimia_transfer_head", {}),
        "attnres_transfer_head": ("transfer_head", {"mixer": "attnres"}),
        "fine_tune": ("transfer_head", {"freeze_base": False}),
    }
    results: dict[str, Any] = {"base": args.base, "base_accuracy": base_accuracy, "args": vars(args), "recipes": {}}
    for seed in range(args.seeds):
        x, y, xt, yt = load_split(args.data, range(5, 10), args.train, args.test, seed=100 + seed)
        for label, (name, extra) in recipes.items():
            torch.manual_seed(seed)
            model = create_model(name, **{**head, **extra})
            train(model, x, y, epochs=args.epochs, lr=args.lr, batch_size=64, seed=seed, desc=f"{label} s{seed}")
            acc = accuracy(model, xt, yt)
            entry = results["recipes"].setdefault(label, {"accuracy": [], "trainable": 0})
            entry["accuracy"].append(acc)
            entry["trainable"] = count_parameters(model, trainable_only=True)
            print(f"seed {seed} {label:<24} accuracy {acc:.4f}")
    for entry in results["recipes"].values():
        acc = entry["accuracy"]
        entry["mean"], entry["std"] = statistics.mean(acc), statistics.stdev(acc) if len(acc) > 1 else 0.0
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    a = results["args"]
    lines = [
        f"Base `{results['base']}` (width {a['base_width']}) trained on MNIST digits 0-4 ({a['base_train']} images, "
        f"{a['base_epochs']} epochs): test accuracy {results['base_accuracy']:.4f}. Target: digits 5-9, "
        f"{a['train']} training images, {a['test']} test images, {a['epochs']} epochs AdamW lr {a['lr']}, "
        f"{a['seeds']} seeds.",
        "",
        "| recipe | trainable params | test accuracy (mean +- std) |",
        "|---|---:|---|",
    ]
    for label, entry in results["recipes"].items():
        lines.append(f"| {label} | {entry['trainable']:,} | {entry['mean']:.4f} +- {entry['std']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (base.pt, results.json, results.md)")
    parser.add_argument("--data", default=MNIST, help="mnist.pkl.gz")
    parser.add_argument("--base", default="qimia_resnet20")
    parser.add_argument("--base-width", type=int, default=8)
    parser.add_argument("--base-train", type=int, default=5000)
    parser.add_argument("--base-epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=500, help="labelled target images per seed")
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--reuse-base", action="store_true", help="load OUT/base.pt (same base args) instead of training")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
