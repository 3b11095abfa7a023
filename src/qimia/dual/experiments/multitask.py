"""Two tasks with 10 shared outputs: joint training (``qimia dual multitask``) or continual, task 0
then task 1 (``qimia dual continual``).

Task 0 is MNIST (or the digits); task 1 is Fashion-MNIST when the user has it
(``data.second=fashion``, torchvision, no download at run time), scikit-learn's 8x8 digits at 28x28
(``data.second=digits``: another domain of the same ten classes, always available) or task 0 with one
fixed pixel permutation (``data.second=permuted``, always available).
One training run by the one training engine, recorded by the
:class:`~qimia.dual.lightning.DualRecorderCallback`; both test sets are evaluated as Lightning
validation sets after ``steps_per_task`` steps (the continual run's checkpoint after task 0) and
at the end.

The setting of the multi-task and continual experiments of Irie, Csordás, Schmidhuber 2022, "The
Dual Form of Neural Networks Revisited: Connecting Test Time Predictions to Training Patterns via
Spotlights of Attention" (ICML 2022): the paper's MLP 784-800-800-10 (``model.hidden``) and the
training slots split into 20 groups, one per (class, task).

Reported:
* attention per group: for test examples of each task and each layer, the fraction of the total
  attention score that goes to the slots of each of the 20 (class, task) groups, summed per task
  (the task shares), and how often the group with the largest share is (the target class, the
  test example's own task), is the own task, or is the target class (either task);
* figures ``groups_<score>_test_task<k>.png``: per layer, the mean share of each (class, task)
  group (:func:`~qimia.dual.plots.plot_group_shares`);
* masking: the model rebuilt from ``W_0`` and only task 0's slots, with the exact final
  coefficients (momentum tails and weight-decay shrink of the later steps included), and
  its accuracy on both tasks, next to the model after task 0 (continual) and the final model.

Writes ``results.json`` and ``report.md`` in the job folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from qimia.dual.experiments.common import (
    accuracy, check_not_resumed, command_line, train_recorded, write_json,
)
from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.plots import plot_group_shares
from qimia.dual.reconstruct import reconstruct_model
from qimia.dual.store import LABEL, TASK

MODES = ("continual", "joint")


def check_schedule(cfg: DictConfig) -> None:
    """The schedule is ``data.steps_per_task`` per task in one epoch: refuse trainer budgets that
    would cut or repeat it."""
    if cfg.data.steps_per_task < 1:
        raise ValueError(f"data.steps_per_task={cfg.data.steps_per_task}: pass data.steps_per_task=<N >= 1>.")
    if cfg.trainer.max_epochs != 1 or cfg.trainer.max_steps != -1:
        raise ValueError(f"trainer.max_epochs={cfg.trainer.max_epochs}, trainer.max_steps={cfg.trainer.max_steps}: "
                         "a two-task run is one epoch of 2 x data.steps_per_task steps; set data.steps_per_task "
                         "instead (and leave trainer.max_epochs=1, trainer.max_steps=-1).")


def run(cfg: DictConfig, out: Path) -> dict:
    """Train with recording, then masking and attention shares; writes ``results.json`` and ``report.md``."""
    from qimia.data.image_tasks import TwoTaskDataModule
    from qimia.training.callbacks import MetricHistory
    from qimia.training.dual import RecordedClassificationModule, classification_batch_meta
    from qimia.training.engine import optimizer_factory, scheduler_factory, seed_run

    if cfg.mode not in MODES:
        raise ValueError(f"mode={cfg.mode!r}: choose one of {MODES}.")
    check_schedule(cfg)
    check_not_resumed(cfg)
    data = TwoTaskDataModule(task=cfg.data.task, path=cfg.data.path, second=cfg.data.second,
                             fashion_root=cfg.data.fashion_root, mode=cfg.mode, steps_per_task=cfg.data.steps_per_task,
                             permutation_seed=cfg.data.permutation_seed, batch_size=cfg.data.batch_size,
                             num_workers=cfg.data.num_workers, seed=cfg.seed)
    data.setup()
    seed_run(cfg)
    module = RecordedClassificationModule(instantiate(cfg.model), optimizer=optimizer_factory(cfg),
                                          scheduler=scheduler_factory(cfg))
    store_path = Path(cfg.record.store_dir) if cfg.record.store_dir else out / "store"
    history = MetricHistory()
    _, store = train_recorded(cfg, module, out, store_path, classification_batch_meta, data.train_dataloader(),
                              val_loaders=data.val_dataloader(), callbacks=[history],
                              info={"experiment": f"multitask-{cfg.mode}", "seed": cfg.seed})
    test = data.test_splits
    evaluate = lambda m: [accuracy(m, x, y) for x, y in test]  # noqa: E731
    res: dict = {"command": command_line(), "config": OmegaConf.to_container(cfg, resolve=True),
                 "setup": {"mode": cfg.mode, "data": cfg.data.task, "task2": cfg.data.second,
                           "hidden": list(cfg.model.hidden), "lr": cfg.optimizer.lr,
                           "momentum": cfg.optimizer.get("momentum", 0.0), "steps_per_task": cfg.data.steps_per_task,
                           "batch_size": cfg.data.batch_size, "seed": cfg.seed}}
    if cfg.mode == "continual":
        after = next(v for v in history.val if v["step"] == cfg.data.steps_per_task)
        res["acc_after_task0"] = [after["val/acc_task0"], after["val/acc_task1"]]
    res["acc_final"] = evaluate(module)
    res["acc_reconstructed_all_slots"] = evaluate(reconstruct_model(store, module))
    res["acc_masked_keep_task0"] = evaluate(reconstruct_model(store, module, keep=lambda m: m[:, TASK] == 0))
    res["acc_masked_keep_task1"] = evaluate(reconstruct_model(store, module, keep=lambda m: m[:, TASK] == 1))

    shares: dict = {}
    for t, (xt, yt) in enumerate(test):
        sub = torch.randperm(len(xt), generator=torch.Generator().manual_seed(0))[: cfg.analysis.test_subset]
        queries, _ = layer_inputs(module, xt[sub], store.layer_names)
        for name in store.layer_names:
            key = f"layer{store.layer(name).index}"
            for score in cfg.analysis.scores:
                explainer = DualExplainer(store, name, score=score, device=cfg.analysis.device)
                e = explainer.explain(queries[name], k=1, group_by=(LABEL, TASK))
                shares.setdefault(score, {}).setdefault(f"test_task{t}", {})[key] = group_shares(
                    (e.group_totals / e.total[:, None]).numpy(), e.group_ids, yt[sub].numpy(), t)
    res["attention_shares"] = shares
    res["figures"] = [plot_group_shares(
        {layer: sh["share_groups"] for layer, sh in layers.items()}, out / f"groups_{score}_{test_name}.png",
        title=f"{cfg.mode}: mean over {test_name} examples, score: {score}{', APPROXIMATE' if score == 'key' else ''}").name
        for score, per_test in shares.items() for test_name, layers in per_test.items()]
    res["slots_per_task"] = {int(g): int(c) for g, c in zip(*np.unique(store.meta(0)[:, TASK], return_counts=True))}
    if not cfg.record.keep_stores:
        shutil.rmtree(store_path)
    write_json(out / "results.json", res)
    (out / "report.md").write_text(to_markdown(res))
    return res


def group_shares(frac: np.ndarray, group_ids: np.ndarray, targets: np.ndarray, task: int) -> dict:
    """Summary of the attention of ``M`` test examples of ``task`` over the (class, task) groups.

    Args:
        frac: ``(M, G)`` share of each example's total attention score per group (rows sum to 1).
        group_ids: ``(G, 2)`` the groups' ``(class, task)``.
        targets: ``(M,)`` the examples' classes.

    Returns:
        ``share_task<k>`` ``[mean, std]`` over examples of the share of task ``k``'s slots;
        ``share_groups`` ``{"<class>,<task>": mean share}``; and the % of examples whose largest
        group is ``(target, task)`` (``argmax_target_own_task``), has ``task``
        (``argmax_own_task``), or has the target class (``argmax_target_class``).
    """
    top = group_ids[frac.argmax(1)]                                                  # (M, 2)
    out: dict = {}
    for k in np.unique(group_ids[:, 1]):
        per_example = frac[:, group_ids[:, 1] == k].sum(1)                           # (M,)
        out[f"share_task{int(k)}"] = [float(per_example.mean()), float(per_example.std())]
    out["share_groups"] = {f"{int(c)},{int(k)}": float(m) for (c, k), m in zip(group_ids, frac.mean(0))}
    pct = lambda hit: float(100.0 * np.mean(hit))  # noqa: E731
    out["argmax_target_own_task"] = pct((top[:, 0] == targets) & (top[:, 1] == task))
    out["argmax_own_task"] = pct(top[:, 1] == task)
    out["argmax_target_class"] = pct(top[:, 0] == targets)
    return out


def to_markdown(res: dict) -> str:
    """The report: accuracies of the final, rebuilt and masked models, then the attention shares."""
    cfg = res["setup"]
    f = lambda a: f"{a[0]:.2f} / {a[1]:.2f}"  # noqa: E731
    lines = [f"Command: `{res['command']}`", "", f"## {cfg['mode']}: task 0 = {cfg['data']}, task 1 = {cfg['task2']} "
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
        lines += [f"Attention over the {len(next(iter(next(iter(per_test.values())).values()))['share_groups'])} "
                  f"(class, task) groups of training slots, score = {score}{tag}: the share per training task "
                  "(mean +- std over test examples) and the % of test examples whose largest group is "
                  "(target, own task) / the own task / the target class:", "",
                  "| test set | layer | share of task-0 slots | share of task-1 slots | argmax = (target, own task) "
                  "| argmax = own task | argmax = target class |", "|---|---|---|---|---|---|---|"]
        for test_name, layers in per_test.items():
            for layer, sh in layers.items():
                c = [f"{sh[k][0]:.3f} +- {sh[k][1]:.3f}" if k in sh else "-" for k in ("share_task0", "share_task1")]
                p = [f"{sh[k]:.1f}" for k in ("argmax_target_own_task", "argmax_own_task", "argmax_target_class")]
                lines.append(f"| {test_name} | {layer} | {c[0]} | {c[1]} | {p[0]} | {p[1]} | {p[2]} |")
        lines.append("")
    return "\n".join(lines)
