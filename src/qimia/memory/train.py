"""Training loop for memory models on the algorithmic tasks: seeded, checkpointed, resumable.

    cfg = TrainConfig(task="copy", model="ntm", steps=20000, batch_size=16)
    history = train(cfg)

Each step draws one batch (one length per batch, uniform in ``[min_len, max_len]``), takes
the masked cross-entropy in bits per sequence as the loss, clips the gradient norm (if
``clip_grad > 0``) and steps the optimizer. Every ``eval_every`` steps the model is
evaluated on fresh sequences of every training length, a checkpoint is written atomically
to ``<out>/checkpoint.pt`` and the learning curve to ``<out>/curve.png``. ``resume=<path>``
continues from a checkpoint (model, optimizer, data generator, history).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from qimia.memory.controllers import CONTROLLERS
from qimia.memory.dnc import DNC, DNCConfig
from qimia.memory.lstm import LSTMBaseline, LSTMConfig
from qimia.memory.ntm import NTM, NTMConfig
from qimia.memory.tasks import make_task, sequence_metrics

# per task: (task kwargs, default training lengths)
TASK_DEFAULTS: dict[str, tuple[dict, tuple[int, int]]] = {
    "copy": ({"width": 8}, (1, 20)),
    "repeat_copy": ({"width": 8}, (1, 10)),
    "associative_recall": ({"width": 6, "item_len": 3}, (2, 6)),
    "priority_sort": ({"width": 8, "n_out": 16}, (20, 20)),
    "ngrams": ({"order": 6}, (200, 200)),
}
MODELS = ("ntm", "dnc", "lstm")
# config keys that define each model's parameters (a resumed run must match them)
MODEL_KEYS = {
    "common": ["task", "model"],
    "ntm": ["controller", "controller_size", "memory_slots", "word_size", "read_heads", "write_heads"],
    "dnc": ["controller", "controller_size", "memory_slots", "word_size", "read_heads"],
    "lstm": ["hidden_size", "num_layers"],
}
OPTIMIZERS = ("adam", "rmsprop")


@dataclass
class TrainConfig:
    """Everything a run needs; every field is a ``key=value`` override on the CLI."""

    task: str = "copy"
    model: str = "ntm"  # ntm | dnc | lstm
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | rmsprop
    clip_grad: float = 10.0  # max gradient norm; 0 disables
    seed: int = 0
    min_len: int = 0  # 0: the task's default
    max_len: int = 0
    eval_every: int = 250
    eval_batch: int = 32
    eval_lengths: list[int] = field(default_factory=list)  # extra (generalisation) lengths, e.g. [40, 80]
    out: str = ""  # output directory; default runs/memory/<task>_<model>_s<seed>
    resume: str = ""  # checkpoint to continue from
    threads: int = 0  # torch.set_num_threads; 0 leaves it
    device: str = "cpu"
    progress: bool = True
    # model size
    controller: str = "lstm"
    controller_size: int = 100
    memory_slots: int = 128
    word_size: int = 20
    read_heads: int = 1
    write_heads: int = 1
    hidden_size: int = 119  # LSTM baseline; 119 matches the default NTM (62.8k vs 62.7k parameters)
    num_layers: int = 1  # LSTM baseline

    def __post_init__(self) -> None:
        if self.task not in TASK_DEFAULTS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {sorted(TASK_DEFAULTS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {list(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unsupported optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        for name in ("steps", "batch_size", "eval_every", "eval_batch", "controller_size", "memory_slots",
                     "word_size", "read_heads", "write_heads", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_len", "max_len", "threads"):  # 0 means "the default"
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: default), got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.clip_grad < 0:
            raise ValueError(f"clip_grad must be >= 0 (0 disables clipping), got {self.clip_grad}")
        if any(n < 1 for n in self.eval_lengths):
            raise ValueError(f"eval_lengths must all be >= 1, got {self.eval_lengths}")
        if self.controller not in CONTROLLERS:
            raise ValueError(f"unknown controller {self.controller!r}; choose one of {sorted(CONTROLLERS)}")
        lo, hi = TASK_DEFAULTS[self.task][1]
        self.min_len = self.min_len or lo
        self.max_len = self.max_len or hi
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        if not self.out:
            self.out = f"runs/memory/{self.task}_{self.model}_s{self.seed}"


def build_model(cfg: TrainConfig, input_size: int, output_size: int) -> nn.Module:
    """The model named by ``cfg.model`` for a task with the given channel sizes."""
    if cfg.model == "ntm":
        return NTM(NTMConfig(input_size, output_size, cfg.controller, cfg.controller_size, cfg.memory_slots,
                             cfg.word_size, cfg.read_heads, cfg.write_heads))
    if cfg.model == "dnc":
        return DNC(DNCConfig(input_size, output_size, cfg.controller, cfg.controller_size, cfg.memory_slots,
                             cfg.word_size, cfg.read_heads))
    return LSTMBaseline(LSTMConfig(input_size, output_size, cfg.hidden_size, cfg.num_layers))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def evaluate(model: nn.Module, task, lengths: list[int], batch: int, seed: int, device: str) -> dict[int, dict]:
    """Bits and wrong bits per sequence at each length, on fresh sequences from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    out = {}
    for length in lengths:
        b = task.sample(batch, length, gen)
        logits = model(b.inputs.to(device))[0]
        m = sequence_metrics(logits, b.targets.to(device), b.mask.to(device))
        out[length] = {"bits": m.bits_per_sequence.item(), "wrong_bits": m.wrong_bits_per_sequence.item()}
    model.train()
    return out


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a crash mid-write never destroys the previous checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ("model", "optimizer", "config", "step"),
                    kind: str = "qimia memory") -> dict:
    """Read a checkpoint written by a qimia trainer; a corrupt or foreign file raises a clear RuntimeError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise RuntimeError(
            f"cannot read checkpoint {path!s}: {err}. Pass resume= a file written by this trainer."
        ) from err
    if not isinstance(ckpt, dict) or not set(required) <= set(ckpt):
        raise RuntimeError(f"{path!s} is not a {kind} checkpoint (missing {'/'.join(required)})")
    return ckpt


def check_resume_config(saved: dict, cfg: object, keys: list[str]) -> None:
    """Raise ValueError if the checkpoint's config ``saved`` differs from ``cfg`` on any of ``keys``."""
    for key in keys:
        if key not in saved:
            raise ValueError(f"resume: checkpoint config has no {key!r}; it was written by another trainer")
        if saved[key] != getattr(cfg, key):
            raise ValueError(f"resume: checkpoint has {key}={saved[key]!r} but this run asks "
                             f"{key}={getattr(cfg, key)!r}; pass the same value")


def train(cfg: TrainConfig) -> dict:
    """Train, evaluating and checkpointing every ``eval_every`` steps. Returns the history dict."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task_kwargs, _ = TASK_DEFAULTS[cfg.task]
    task = make_task(cfg.task, **task_kwargs)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, task.input_size, task.output_size).to(cfg.device)
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.RMSprop
    optimizer = opt_cls(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = {"config": dataclasses.asdict(cfg), "parameters": count_parameters(model), "train": [], "eval": []}
    if hasattr(task, "optimal_bits"):  # N-grams: the Bayes-optimal predictor's bits per sequence
        history["optimal_bits"] = task.optimal_bits(256, cfg.max_len, torch.Generator().manual_seed(7)).item()
    start = 0
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume)
        check_resume_config(ckpt["config"], cfg, MODEL_KEYS["common"] + MODEL_KEYS[cfg.model])
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        history["train"], history["eval"] = ckpt["history"]["train"], ckpt["history"]["eval"]
        start = ckpt["step"]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not cfg.progress,
               desc=f"{cfg.model}/{cfg.task}")
    t0 = time.perf_counter() - (history["train"][-1]["seconds"] if history["train"] else 0.0)  # accumulates on resume
    run_bits, run_wrong, last_logged = 0.0, 0.0, start
    for step in bar:
        length = int(torch.randint(cfg.min_len, cfg.max_len + 1, (1,), generator=gen))
        b = task.sample(cfg.batch_size, length, gen)
        logits = model(b.inputs.to(cfg.device))[0]
        m = sequence_metrics(logits, b.targets.to(cfg.device), b.mask.to(cfg.device))
        loss = m.bits_per_sequence.item()
        if not math.isfinite(loss):  # stop before the update; the last checkpoint stays intact
            raise FloatingPointError(f"loss became {loss} at step {step + 1}; lower lr or clip_grad, then resume=")
        optimizer.zero_grad(set_to_none=True)
        m.bits_per_sequence.backward()
        if cfg.clip_grad > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optimizer.step()
        run_bits += loss
        run_wrong += m.wrong_bits_per_sequence.item()
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            n, last_logged = done - last_logged, done
            history["train"].append({"step": done, "sequences": done * cfg.batch_size,
                                     "bits": run_bits / max(n, 1), "wrong_bits": run_wrong / max(n, 1),
                                     "seconds": time.perf_counter() - t0})
            run_bits = run_wrong = 0.0
            lengths = list(range(cfg.min_len, cfg.max_len + 1))
            ev = evaluate(model, task, lengths, cfg.eval_batch, 10_000 + cfg.seed, cfg.device)
            mean_wrong = sum(v["wrong_bits"] for v in ev.values()) / len(ev)
            mean_bits = sum(v["bits"] for v in ev.values()) / len(ev)
            history["eval"].append({"step": done, "sequences": done * cfg.batch_size,
                                    "bits": mean_bits, "wrong_bits": mean_wrong})
            bar.set_postfix(bits=f"{mean_bits:.2f}", wrong=f"{mean_wrong:.3f}")
            save_checkpoint(out / "checkpoint.pt", {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                "config": dataclasses.asdict(cfg), "step": done, "history": history,
            })
            plot_curve(history, out / "curve.png")
            (out / "history.json").write_text(json.dumps(history, indent=1))
    if cfg.eval_lengths:
        history["generalisation"] = {
            str(k): v for k, v in evaluate(model, task, cfg.eval_lengths, cfg.eval_batch, 20_000 + cfg.seed,
                                           cfg.device).items()
        }
    (out / "history.json").write_text(json.dumps(history, indent=1))
    plot_curve(history, out / "curve.png")
    if cfg.model in ("ntm", "dnc"):
        plot_weightings(model, task, cfg.max_len, out / "weightings.png", cfg.device)
        for length in cfg.eval_lengths:
            plot_weightings(model, task, length, out / f"weightings_len{length}.png", cfg.device)
    model.history = history
    return history


def plot_curve(history: dict, path: Path) -> None:
    """Learning curve: eval bits and wrong bits per sequence vs sequences seen (log y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = history["eval"]
    if not ev:
        return
    seqs = [e["sequences"] for e in ev]
    train_seqs = [e["sequences"] for e in history["train"]]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for i, key in enumerate(("bits", "wrong_bits")):
        floor = 1e-4 if key == "bits" else 1e-3  # log axis: show exact zeros at the floor
        ax[i].plot(train_seqs, [max(e[key], floor) for e in history["train"]], alpha=0.5, label="train (running mean)")
        ax[i].plot(seqs, [max(e[key], floor) for e in ev], label="eval (fresh sequences, every length)")
        ax[i].set(yscale="log", xlabel="training sequences")
        ax[i].ticklabel_format(axis="x", style="sci", scilimits=(3, 3))
    ax[0].set_ylabel("cross-entropy (bits / sequence)")
    ax[1].set_ylabel("wrong bits / sequence")
    ax[1].axhline(0.1, ls="--", c="gray")
    ax[0].legend(fontsize=7)
    cfg = history["config"]
    fig.suptitle(f"{cfg['model']} on {cfg['task']} (lengths {cfg['min_len']}-{cfg['max_len']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@torch.no_grad()
def plot_weightings(model: nn.Module, task, length: int, path: Path, device: str = "cpu") -> None:
    """Inputs, outputs and the read/write weightings over time (as in the NTM paper, fig. 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = task.sample(1, length, torch.Generator().manual_seed(123))
    model.eval()
    logits, _, states = model(b.inputs.to(device), trace=True)
    model.train()
    if hasattr(states[0], "access"):  # DNC
        write = torch.stack([s.access.write_weights[0] for s in states], 1)  # (N, T)
        read = torch.stack([s.access.read_weights[0, 0] for s in states], 1)
    else:
        write = torch.stack([s.write_weights[0, 0] for s in states], 1)
        read = torch.stack([s.read_weights[0, 0] for s in states], 1)
    fig, ax = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    ax[0, 0].imshow(b.inputs[0].T.numpy(), aspect="auto", cmap="gray_r", interpolation="nearest")
    ax[0, 0].set_title("inputs")
    ax[0, 1].imshow(torch.sigmoid(logits[0].cpu()).T.numpy(), aspect="auto", cmap="gray_r", interpolation="nearest")
    ax[0, 1].set_title("outputs")
    ax[1, 0].imshow(write.cpu().numpy(), aspect="auto", cmap="gray_r", interpolation="nearest")
    ax[1, 0].set(title="write weighting", xlabel="time", ylabel="memory row")
    ax[1, 1].imshow(read.cpu().numpy(), aspect="auto", cmap="gray_r", interpolation="nearest")
    ax[1, 1].set(title="read weighting (head 0)", xlabel="time")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
