"""Character-level LSTM language model built from ``nn.Linear`` cells, explained by its training text.

The recurrent layer is one ``nn.Linear`` on ``[h_{t-1}; x_t]`` (keys), called once per time
step; the output layer reads the LSTM outputs ``h_t``. For a prompt, the queries are the
inputs these layers see at the prompt's last position; the report lists the top-3
training passages (with their corpus positions) and the attention grouped by position in
the training corpus.

Corpora: any local text file (``--text``), WikiText-2 through HF ``datasets`` for users
who have it cached (``--dataset wikitext2``), or by default a corpus made of the docstrings
of a fixed list of standard-library modules (always available, deterministic).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.recorder import DualRecorder
from qimia.dual.store import EXAMPLE, POS, USE, DualStore

STDLIB_MODULES = ("collections", "functools", "itertools", "json", "pathlib", "textwrap", "argparse",
                  "logging", "unittest", "string", "heapq", "bisect", "random", "statistics", "fractions")


def stdlib_corpus(modules: tuple[str, ...] = STDLIB_MODULES) -> str:
    """Docstrings of the given stdlib modules and their public members, in a fixed order."""
    parts = []
    for name in modules:
        mod = importlib.import_module(name)
        parts.append(mod.__doc__ or "")
        for attr in sorted(dir(mod)):
            doc = getattr(getattr(mod, attr), "__doc__", None) if not attr.startswith("_") else None
            if isinstance(doc, str) and len(doc) > 40:
                parts.append(doc)
    return "\n".join(p.strip() for p in parts if p)


def wikitext2() -> str:
    """WikiText-2 (raw) training split through HF ``datasets`` (must be cached or downloadable)."""
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise ImportError("WikiText-2 needs the 'datasets' package: pip install 'qimia[hf]'") from exc
    try:
        ds = load_dataset("wikitext", "wikitext-2-raw-v1", split="train")
    except Exception as exc:  # network / cache errors come in many types
        raise RuntimeError(f"could not load WikiText-2 ({exc}); download it once with network access, "
                           "or pass --text FILE to use a local text file.") from exc
    return "".join(ds["text"])


class LSTMState(NamedTuple):
    """Recurrent state: hidden ``h`` and cell ``c``, each ``(B, H)``."""

    h: torch.Tensor
    c: torch.Tensor


class LinearLSTM(nn.Module):
    """Char LSTM LM whose only weight matrices are ``nn.Linear`` (so all are recorded).

    ``gates = cell([h_{t-1}; x_t])`` with ``cell: Linear(H + E, 4H)``; logits ``= out(h_t)``.
    """

    def __init__(self, vocab: int, embed: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.cell = nn.Linear(hidden + embed, 4 * hidden)
        self.out = nn.Linear(hidden, vocab)
        self.hidden = hidden

    def step(self, x: torch.Tensor, state: LSTMState) -> LSTMState:
        """One time step: ``x`` ``(B, E)`` -> new state."""
        i, f, g, o = self.cell(torch.cat([state.h, x], -1)).chunk(4, -1)            # 4 x (B, H)
        c = torch.sigmoid(f) * state.c + torch.sigmoid(i) * torch.tanh(g)
        return LSTMState(torch.sigmoid(o) * torch.tanh(c), c)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(B, T)`` -> logits ``(B, T, V)``."""
        B, T = tokens.shape
        x = self.embed(tokens)                                                      # (B, T, E)
        state = LSTMState(x.new_zeros(B, self.hidden), x.new_zeros(B, self.hidden))
        hs = []
        for t in range(T):
            state = self.step(x[:, t], state)
            hs.append(state.h)
        return self.out(torch.stack(hs, 1))                                         # (B, T, V)


@dataclass
class LMConfig:
    """Hyper-parameters of the language-model experiment."""

    text: str | None = None            # local text file; None -> dataset
    dataset: str = "stdlib"            # "stdlib" (docstrings) or "wikitext2" (HF datasets)
    max_chars: int = 200_000
    seq_len: int = 64
    batch_size: int = 16
    steps: int = 300
    embed: int = 32
    hidden: int = 128
    lr: float = 1.0
    momentum: float = 0.0
    clip: float = 1.0
    seed: int = 0
    prompts: tuple[str, ...] = ("Return a new ", "The default value")
    top: int = 3
    position_bins: int = 10
    device: str = "cpu"
    store_dir: str = "runs/dual-lm"
    progress: bool = True


def load_corpus(cfg: LMConfig) -> str:
    if cfg.text:
        text = Path(cfg.text).read_text(encoding="utf-8", errors="replace")
    elif cfg.dataset == "wikitext2":
        text = wikitext2()
    elif cfg.dataset == "stdlib":
        text = stdlib_corpus()
    else:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; use 'stdlib', 'wikitext2' or --text FILE.")
    text = text[: cfg.max_chars]
    if len(text) < 4 * cfg.seq_len:
        raise ValueError(f"the corpus has {len(text)} characters; need at least {4 * cfg.seq_len}.")
    return text


def run(cfg: LMConfig, out_dir: str | Path) -> dict:
    """Train + record, then explain each prompt. Writes ``lm_report.md`` and ``lm_report.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = load_corpus(cfg)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.int64)
    T = cfg.seq_len
    n_chunks = (len(data) - 1) // T                   # passage k = text[k*T : k*T + T + 1]
    torch.manual_seed(cfg.seed)
    model = LinearLSTM(len(chars), cfg.embed, cfg.hidden)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    rec = DualRecorder(model, opt, str(Path(cfg.store_dir)), overwrite=True,
                       info={"experiment": "lstm_lm", "config": asdict(cfg)})
    g = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in tqdm(range(cfg.steps), desc="lm", disable=not cfg.progress, leave=False):
        ids = torch.randint(0, n_chunks, (cfg.batch_size,), generator=g)            # (B,)
        pos = ids[:, None] * T + torch.arange(T + 1)                                 # (B, T+1)
        seq = data[pos]
        rec.set_batch(ids, labels=seq[:, 1:])                                       # next-char targets
        logits = model(seq[:, :-1])                                                 # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), seq[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        losses.append(float(loss.detach()))
    store = rec.close()
    report = {"config": asdict(cfg), "vocab": len(chars), "corpus_chars": len(text),
              "loss_first_last": [float(np.mean(losses[:10])), float(np.mean(losses[-10:]))],
              "slots": {n: store.num_slots(n) for n in store.layer_names}, "prompts": []}
    for prompt in cfg.prompts:
        report["prompts"].append(explain_prompt(model, store, text, stoi, prompt, T, cfg))
    (out / "lm_report.json").write_text(json.dumps(report, indent=1))
    (out / "lm_report.md").write_text(to_markdown(report))
    return report


def corpus_positions(store: DualStore, layer: str, seq_len: int) -> np.ndarray:
    """``(N,)`` corpus offset of the character each slot reads (recurrent cell: use = time step)."""
    meta = store.meta(layer)
    t = np.where(meta[:, USE] > 0, meta[:, USE], meta[:, POS])
    return meta[:, EXAMPLE] * seq_len + t


def explain_prompt(model: LinearLSTM, store: DualStore, text: str, stoi: dict[str, int], prompt: str,
                   seq_len: int, cfg: LMConfig) -> dict:
    """Top training passages and position histogram for the prompt's last position, per layer and score."""
    unknown = sorted({c for c in prompt if c not in stoi})
    if unknown:
        raise ValueError(f"prompt characters {unknown} do not occur in the training corpus.")
    tokens = torch.tensor([[stoi[c] for c in prompt]])                              # (1, P)
    queries, logits = layer_inputs(model, tokens, store.layer_names)
    P = len(prompt)
    next_char = [c for c, i in stoi.items() if i == int(logits[0, -1].argmax())][0]
    entry: dict = {"prompt": prompt, "predicted_next": next_char, "layers": {}}
    for name in store.layer_names:
        q = queries[name][-1:] if name == "cell" else queries[name].reshape(P, -1)[-1:]   # (1, d_key)
        positions = corpus_positions(store, name, seq_len)
        bins = np.minimum(positions * cfg.position_bins // len(text), cfg.position_bins - 1)
        for score in ("contribution", "key"):
            ex = DualExplainer(store, name, score=score, device=cfg.device)
            e = ex.explain(q, k=10 * cfg.top)     # a passage drawn in several steps has several slots
            top: list[dict] = []
            for s, slot in zip(e.topk_scores[0].tolist(), e.topk_slots[0].tolist()):
                p = int(positions[slot])
                if any(t["corpus_pos"] == p for t in top):
                    next(t for t in top if t["corpus_pos"] == p)["slots"] += 1
                    continue
                if len(top) < cfg.top:
                    top.append({"score": s, "slot": slot, "slots": 1, "corpus_pos": p,
                                "passage": int(store.meta(name)[slot, EXAMPLE]),
                                "context": text[max(0, p - 40):p] + "[" + text[p:p + 1] + "]" + text[p + 1:p + 20]})
            hist = np.zeros(cfg.position_bins)
            for off, block in ex.stream(q):
                np.add.at(hist, bins[off:off + block.shape[1]], block[0].numpy())
            entry["layers"].setdefault(name, {})[score] = {
                "top": top, "position_share": (hist / max(hist.sum(), 1e-30)).tolist()}
    return entry


def to_markdown(report: dict) -> str:
    cfg = report["config"]
    lines = ["# LSTM LM dual-form report", "",
             f"Corpus: {cfg['text'] or cfg['dataset']} ({report['corpus_chars']} chars, vocab {report['vocab']}); "
             f"LSTM E={cfg['embed']} H={cfg['hidden']}, {cfg['steps']} SGD steps (lr {cfg['lr']}, clip {cfg['clip']}), "
             f"batch {cfg['batch_size']} x {cfg['seq_len']} chars; loss {report['loss_first_last'][0]:.3f} -> "
             f"{report['loss_first_last'][1]:.3f}. Slots: {report['slots']}.", "",
             "Scores: `contribution` = exact norm of the slot's contribution to the layer output; "
             "`key` = |x_t . x| (APPROXIMATE, ignores values and coefficients).", ""]
    for p in report["prompts"]:
        lines += [f"## Prompt {p['prompt']!r} (model's next character: {p['predicted_next']!r})", ""]
        for layer, per_score in p["layers"].items():
            for score, r in per_score.items():
                tag = " (APPROXIMATE)" if score == "key" else ""
                lines.append(f"**layer `{layer}`, score `{score}`{tag}**: top training passages")
                lines.append("")
                for i, t in enumerate(r["top"], 1):
                    ctx = t["context"].replace("\n", "\\n").replace("|", "\\|")
                    lines.append(f"{i}. passage {t['passage']}, corpus position {t['corpus_pos']}, "
                                 f"best score {t['score']:.3g} ({t['slots']} slot(s) in the top {10 * cfg['top']}): `{ctx}`")
                shares = " ".join(f"{s:.2f}" for s in r["position_share"])
                lines += ["", f"share of attention by corpus decile (start -> end): {shares}", ""]
    return "\n".join(lines)
