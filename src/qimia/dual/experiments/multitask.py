"""Two tasks with 10 shared outputs: joint training or continual (task 0 then task 1).

Task 0 is MNIST; task 1 is Fashion-MNIST when the user has it (``task2="fashion"``,
torchvision, no download at run time) or MNIST with one fixed pixel permutation
(``task2="permuted"``, always available locally; used for the reproduction in this repo).

Reported:
* per-task attention shares: for test examples of each task, the fraction of the total
  attention score (per layer) that goes to slots of task 0 and of task 1;
* masking: the model rebuilt from ``W_0`` and only task 0's slots, with the exact final
  coefficients (momentum tails and weight-decay shrink of the later steps included), and
  its accuracy on both tasks, next to the model after task 0 (continual) and the final model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from qimia.dual.data import batch_indices, load_fashion_mnist, load_images, permute_pixels
from qimia.dual.experiments.common import accuracy, make_mlp, sgd_train
from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.recorder import DualRecorder
from qimia.dual.reconstruct import reconstruct_model
from qimia.dual.store import TASK


@dataclass
class MultitaskConfig:
    """Hyper-parameters of the two-task experiments."""

    mode: str = "continual"            # "continual" (task 0 then task 1) or "joint" (mixed batches)
    data: str = "mnist"                # task 0: "mnist" or "digits"
    task2: str = "permuted"            # task 1: "permuted" (pixels of task 0) or "fashion" (torchvision)
    fashion_root: str | None = None
    mnist_path: str | None = None
    hidden: tuple[int, ...] = (256, 256)
    batch_size: int = 128
    steps_per_task: int = 1000         # continual: per task; joint: total = 2 x this
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    test_subset: int = 200             # per task, for attention shares
    scores: tuple[str, ...] = ("contribution", "key")
    device: str = "cpu"
    store_dir: str = "runs/dual-multitask"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("continual", "joint"):
            raise ValueError(f"mode must be 'continual' or 'joint', got {self.mode!r}.")
        if self.task2 not in ("permuted", "fashion"):
            raise ValueError(f"task2 must be 'permuted' or 'fashion', got {self.task2!r}.")


def load_tasks(cfg: MultitaskConfig):
    """``[(train, test) of task 0, (train, test) of task 1]``."""
    t0 = load_images(cfg.data, cfg.mnist_path)
    if cfg.task2 == "fashion":
        if cfg.fashion_root is None:
            raise ValueError("task2='fashion' needs fashion_root (a torchvision FashionMNIST directory).")
        t1 = load_fashion_mnist(cfg.fashion_root)
    else:
        t1 = (permute_pixels(t0[0]), permute_pixels(t0[1]))
    return [t0, t1]


def run(cfg: MultitaskConfig, out_dir: str | Path) -> dict:
    """Train with recording, then shares and masking. Writes ``<mode>.json`` / ``<mode>.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = load_tasks(cfg)
    (x0, y0), (x1, y1) = tasks[0][0], tasks[1][0]
    n0 = len(x0)                                        # task 1 example ids are offset by n0
    torch.manual_seed(cfg.seed)
    model = make_mlp(784, cfg.hidden, 10)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    rec = DualRecorder(model, opt, str(Path(cfg.store_dir) / cfg.mode), overwrite=True,
                       info={"experiment": f"multitask-{cfg.mode}", "config": asdict(cfg)})
    S = cfg.steps_per_task
    test = [t[1] for t in tasks]
    evaluate = lambda m: [accuracy(m, x, y) for x, y in test]  # noqa: E731

    def continual_batch(step: int):
        t = int(step >= S)
        x, y = tasks[t][0]
        idx = batch_indices(len(x), cfg.batch_size, step, cfg.seed + t)
        return x[idx], y[idx], idx + t * n0, t

    def joint_batch(step: int):
        h = cfg.batch_size // 2
        i0 = batch_indices(len(x0), h, step, cfg.seed)
        i1 = batch_indices(len(x1), cfg.batch_size - h, step, cfg.seed + 1)
        task = torch.cat([torch.zeros(len(i0)), torch.ones(len(i1))]).long()
        return torch.cat([x0[i0], x1[i1]]), torch.cat([y0[i0], y1[i1]]), torch.cat([i0, i1 + n0]), task

    res: dict = {"config": asdict(cfg)}
    if cfg.mode == "continual":
        sgd_train(model, opt, continual_batch, S, recorder=rec, desc="task 0", progress=cfg.progress)
        res["acc_after_task0"] = evaluate(model)
        sgd_train(model, opt, continual_batch, 2 * S, recorder=rec, start=S, desc="task 1", progress=cfg.progress)
    else:
        sgd_train(model, opt, joint_batch, 2 * S, recorder=rec, desc="joint", progress=cfg.progress)
    store = rec.close()
    res["acc_final"] = evaluate(model)
    res["acc_reconstructed_all_slots"] = evaluate(reconstruct_model(store, model))
    res["acc_masked_keep_task0"] = evaluate(reconstruct_model(store, model, keep=lambda m: m[:, TASK] == 0))
    res["acc_masked_keep_task1"] = evaluate(reconstruct_model(store, model, keep=lambda m: m[:, TASK] == 1))

    shares: dict = {}
    for t, (xt, _) in enumerate(test):
        sub = torch.randperm(len(xt), generator=torch.Generator().manual_seed(0))[: cfg.test_subset]
        queries, _ = layer_inputs(model, xt[sub], store.layer_names)
        for name in store.layer_names:
            key = f"layer{store.layer(name).index}"
            for score in cfg.scores:
                e = DualExplainer(store, name, score=score, device=cfg.device).explain(queries[name], k=1, group_by=TASK)
                frac = (e.group_totals / e.total[:, None]).numpy()                   # (M, G)
                gids = [int(g) for g in e.group_ids]
                shares.setdefault(score, {}).setdefault(f"test_task{t}", {})[key] = {
                    f"share_task{g}": [float(np.mean(frac[:, j])), float(np.std(frac[:, j]))]
                    for j, g in enumerate(gids)}
    res["attention_shares"] = shares
    res["slots_per_task"] = {int(g): int(c) for g, c in zip(*np.unique(store.meta(0)[:, TASK], return_counts=True))}
    (out / f"{cfg.mode}.json").write_text(json.dumps(res, indent=1))
    (out / f"{cfg.mode}.md").write_text(to_markdown(res))
    return res


def to_markdown(res: dict) -> str:
    cfg = res["config"]
    f = lambda a: f"{a[0]:.2f} / {a[1]:.2f}"  # noqa: E731
    lines = [f"## {cfg['mode']}: task 0 = {cfg['data']}, task 1 = {cfg['task2']} "
             f"(MLP 784-{'-'.join(map(str, cfg['hidden']))}-10, SGD lr {cfg['lr']} momentum {cfg['momentum']}, "
             f"{cfg['steps_per_task']} steps per task, batch {cfg['batch_size']}, seed {cfg['seed']})", "",
             "| model | acc task 0 / task 1 (%) |", "|---|---|"]
    if "acc_after_task0" in res:
        lines.append(f"| after task 0 (checkpoint) | {f(res['acc_after_task0'])} |")
    lines += [f"| final | {f(res['acc_final'])} |",
              f"| rebuilt from W0 + all slots | {f(res['acc_reconstructed_all_slots'])} |",
              f"| rebuilt from W0 + task-0 slots only (mask task 1) | {f(res['acc_masked_keep_task0'])} |",
              f"| rebuilt from W0 + task-1 slots only (mask task 0) | {f(res['acc_masked_keep_task1'])} |", ""]
    for score, per_test in res["attention_shares"].items():
        tag = " (APPROXIMATE)" if score == "key" else " (exact)"
        lines += [f"Attention share per training task, score = {score}{tag}, mean +- std over test examples:", "",
                  "| test set | layer | share of task-0 slots | share of task-1 slots |", "|---|---|---|---|"]
        for test_name, layers in per_test.items():
            for layer, sh in layers.items():
                c = [f"{sh[k][0]:.3f} +- {sh[k][1]:.3f}" if k in sh else "-" for k in ("share_task0", "share_task1")]
                lines.append(f"| {test_name} | {layer} | {c[0]} | {c[1]} |")
        lines.append("")
    return "\n".join(lines)
