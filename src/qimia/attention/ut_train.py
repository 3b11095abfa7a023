"""Universal Transformer + ACT vs a fixed-depth Transformer on an algorithmic sequence-labelling task.

Tasks (generated on the fly, seeded; tokens ``1..vocab-1``, ``0`` is padding, lengths vary
per sequence so ACT can spend different numbers of steps):

* ``reverse``: ``y[i] = x[L - 1 - i]``.
* ``sort``: ``y`` is ``x`` sorted ascending.

Models: ``ut_act`` (one tied block, ACT up to ``max_steps``), ``ut`` (the same tied block,
always ``max_steps`` steps) and ``transformer`` (``layers`` untied layers; more parameters).
All models see the same batches (same seed), optimizer and step budget; the loss is
cross-entropy on real positions plus, for ACT, ``tau * mean(rho)``. Reported: token and
sequence accuracy on fresh data at the training lengths and at longer ones, mean ponder
steps ``N`` and parameter counts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from qimia.attention.universal import (
    DeepTransformer, DeepTransformerConfig, UniversalTransformer, UTConfig, ponder_loss,
)

UT_TASKS = ("reverse", "sort")


def sample_sequences(task: str, batch: int, min_len: int, max_len: int, vocab: int, gen: torch.Generator,
                     total_len: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``src (B, T)``, ``tgt (B, T)`` and the real-token mask ``(B, T)``; ``T = total_len or max_len``."""
    T = total_len or max_len
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=gen)  # (B,)
    pos = torch.arange(T)
    mask = pos[None] < lengths[:, None]  # (B, T)
    src = torch.randint(1, vocab, (batch, T), generator=gen) * mask
    if task == "reverse":
        idx = (lengths[:, None] - 1 - pos[None]).clamp(min=0)  # (B, T)
        tgt = torch.gather(src, 1, idx) * mask
    elif task == "sort":
        big = torch.where(mask, src, torch.full_like(src, vocab))  # padding sorts last
        tgt = big.sort(dim=1).values * mask
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {list(UT_TASKS)}")
    return src, tgt, mask


@dataclass
class UTTrainConfig:
    task: str = "reverse"
    models: list[str] = field(default_factory=lambda: ["ut_act", "ut", "transformer"])
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    min_len: int = 3
    max_len: int = 10
    test_len: int = 14  # generalisation length (positions past max_len)
    vocab: int = 10
    d_model: int = 64
    num_heads: int = 4
    d_ff: int = 128
    max_steps: int = 6  # UT maximum depth
    layers: int = 6  # fixed-depth transformer layers
    tau: float = 0.01  # ponder cost weight
    seeds: list[int] = field(default_factory=lambda: [0])
    threads: int = 0
    out: str = "runs/memory/ut"
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.models or not self.seeds:
            raise ValueError("models and seeds must not be empty")
        for m in self.models:
            if m not in ("ut_act", "ut", "transformer"):
                raise ValueError(f"unknown model {m!r}; choose from ut_act, ut, transformer")
        if self.task not in UT_TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {list(UT_TASKS)}")
        for name in ("steps", "batch_size", "min_len", "d_model", "num_heads", "d_ff", "max_steps", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab < 2:
            raise ValueError(f"vocab must be >= 2 (token 0 is padding), got {self.vocab}")
        if self.min_len > self.max_len:
            raise ValueError(f"need min_len <= max_len, got min_len={self.min_len}, max_len={self.max_len}")
        # the generalisation split draws lengths max_len+1..test_len after training: check it now, not then
        if self.test_len <= self.max_len:
            raise ValueError(f"test_len must be > max_len (the longer split is lengths max_len+1..test_len), "
                             f"got test_len={self.test_len}, max_len={self.max_len}; raise test_len")


def build(name: str, cfg: UTTrainConfig) -> torch.nn.Module:
    common = dict(vocab=cfg.vocab, d_model=cfg.d_model, num_heads=cfg.num_heads, d_ff=cfg.d_ff)
    if name == "transformer":
        return DeepTransformer(DeepTransformerConfig(layers=cfg.layers, **common))
    return UniversalTransformer(UTConfig(max_steps=cfg.max_steps, act=name == "ut_act", **common))


@torch.no_grad()
def evaluate(model, cfg: UTTrainConfig, min_len: int, max_len: int, seed: int, n: int = 512) -> dict:
    model.eval()
    src, tgt, mask = sample_sequences(cfg.task, n, min_len, max_len, cfg.vocab, torch.Generator().manual_seed(seed))
    logits, info = model(src, mask)
    model.train()
    right = (logits.argmax(-1) == tgt) | ~mask
    return {"token_acc": (right & mask).sum().item() / mask.sum().item(),
            "seq_acc": right.all(1).float().mean().item(),
            "ponder_steps": (info.steps * mask).sum().item() / mask.sum().item()}


def train_one(name: str, cfg: UTTrainConfig, seed: int) -> dict:
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = build(name, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    curve = []
    for step in tqdm(range(cfg.steps), desc=f"{name} s{seed}", disable=not cfg.progress):
        src, tgt, mask = sample_sequences(cfg.task, cfg.batch_size, cfg.min_len, cfg.max_len, cfg.vocab, gen)
        logits, info = model(src, mask)
        loss = F.cross_entropy(logits[mask], tgt[mask])
        if name == "ut_act":
            loss = loss + ponder_loss(info, cfg.tau, mask.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % max(cfg.steps // 10, 1) == 0:
            curve.append({"step": step + 1, "loss": loss.item(),
                          **evaluate(model, cfg, cfg.min_len, cfg.max_len, 1000 + seed, 128)})
    return {"model": name, "seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": time.perf_counter() - t0,
            "in_range": evaluate(model, cfg, cfg.min_len, cfg.max_len, 5000 + seed),
            "longer": evaluate(model, cfg, cfg.max_len + 1, cfg.test_len, 6000 + seed),
            "curve": curve}


def train_ut(cfg: UTTrainConfig) -> dict:
    """Train every model in ``cfg.models`` for each seed; write ``results.json``, ``results.md``, ``curve.png``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runs = [train_one(m, cfg, s) for s in cfg.seeds for m in cfg.models]
    summary = {}
    for m in cfg.models:
        rs = [r for r in runs if r["model"] == m]
        summary[m] = {"parameters": rs[0]["parameters"]}
        for split in ("in_range", "longer"):
            for key in ("token_acc", "seq_acc", "ponder_steps"):
                vals = torch.tensor([r[split][key] for r in rs])
                std = vals.std().item() if len(vals) > 1 else 0.0
                summary[m][f"{split}_{key}"] = {"mean": vals.mean().item(), "std": std}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"config": asdict(cfg), "summary": summary, "runs": runs}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    lines = [f"# UT+ACT vs fixed depth on `{cfg.task}` (lengths {cfg.min_len}-{cfg.max_len}, longer: "
             f"{cfg.max_len + 1}-{cfg.test_len}; {cfg.steps} steps x {cfg.batch_size}, seeds {cfg.seeds})", "",
             "| model | params | token acc | seq acc | ponder steps | token acc (longer) | seq acc (longer) |",
             "|---|---|---|---|---|---|---|"]
    for m, s in summary.items():
        f = lambda k: f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}"  # noqa: E731
        lines.append(f"| {m} | {s['parameters']} | {f('in_range_token_acc')} | {f('in_range_seq_acc')} | "
                     f"{f('in_range_ponder_steps')} | {f('longer_token_acc')} | {f('longer_seq_acc')} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(runs, out / "curve.png")
    return {"summary": summary, "out": str(out)}


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for r in runs:
        steps = [c["step"] for c in r["curve"]]
        ax[0].plot(steps, [c["token_acc"] for c in r["curve"]], label=f"{r['model']} s{r['seed']}")
        ax[1].plot(steps, [c["ponder_steps"] for c in r["curve"]], label=f"{r['model']} s{r['seed']}")
    ax[0].set(xlabel="step", ylabel="token accuracy")
    ax[1].set(xlabel="step", ylabel="mean ponder steps N")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
