"""Character-level LSTM language model built from ``nn.Linear`` cells, explained by its training text
(the language-model analysis of Irie, Csordás, Schmidhuber 2022, "The Dual Form of Neural Networks
Revisited: Connecting Test Time Predictions to Training Patterns via Spotlights of Attention", ICML
2022, whose Table 2 lists the top training passages of test queries).

The recurrent layer is one ``nn.Linear`` on ``[h_{t-1}; x_t]`` (keys), called once per time
step; the output layer reads the LSTM outputs ``h_t``. The model is trained by the one training
engine with the :class:`~qimia.dual.lightning.DualRecorderCallback`; for each prompt, the queries
are the inputs these layers see at the prompt's last position, and the report lists the top
training passages (with their corpus positions) and the attention grouped by position in the
training corpus.

Corpora (config group ``corpus``, sources of :mod:`qimia.data.text`): the Python reference
documentation that ships with CPython (default, offline), any local UTF-8 text file, or
WikiText-2. The training split of the source is used, cut to ``data.max_chars`` characters.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from qimia.dual.experiments.common import check_budget, check_not_resumed, command_line, train_recorded, write_json
from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.store import EXAMPLE, POS, USE, DualStore

if TYPE_CHECKING:
    from qimia.data.text import CharTokenizer

NET_PREFIX = "net."  # recorded layer names are the LightningModule's: net.cell, net.out


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


class WindowsWithIds(Dataset):
    """``(inputs (T,), targets (T,), window id)``: passage ``k`` is ``tokens[k T : k T + T + 1]``."""

    def __init__(self, windows: Dataset) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        inputs, targets = self.windows[i]
        return inputs, targets, i


def check_text(text: str, what: str, min_chars: int) -> None:
    """Refuse text that is too short or that is mostly control characters (binary data).

    Raises:
        ValueError: naming ``what`` and the fix.
    """
    if len(text) < min_chars:
        raise ValueError(f"{what} has {len(text)} characters; the LM needs at least {min_chars} (4 x data.seq_len).")
    control = sum(not (c.isprintable() or c in "\n\t\r") for c in text)
    if control > 0.01 * len(text):
        raise ValueError(f"{what}: {100 * control / len(text):.0f}% of its characters are control characters, so it "
                         "looks like binary data, not text; pass a UTF-8 text file (corpus=text_file corpus.path=...).")


def run(cfg: DictConfig, out: Path) -> dict:
    """Train with recording, then explain each prompt; writes ``results.json`` and ``report.md``."""
    from qimia.data.base import EpochSeededSampler
    from qimia.data.text import CharTokenizer, TokenWindows
    from qimia.training.callbacks import MetricHistory
    from qimia.training.dual import RecordedLanguageModelModule, language_model_batch_meta
    from qimia.training.engine import optimizer_factory, scheduler_factory, seed_run

    check_budget(cfg)
    check_not_resumed(cfg)
    source = instantiate(cfg.corpus)
    text = source.load().train[: cfg.data.max_chars]
    check_text(text, f"the corpus {cfg.corpus.get('path') or cfg.corpus._target_}", 4 * cfg.data.seq_len)
    tokenizer = CharTokenizer(text)
    unknown = sorted({c for p in cfg.analysis.prompts for c in p if c not in tokenizer.index})
    if unknown:
        raise ValueError(f"prompt characters {unknown} do not occur in the training corpus; change the prompts.")
    dataset = WindowsWithIds(TokenWindows(tokenizer.encode(text), cfg.data.seq_len))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.data.batch_size, drop_last=True,
                                         sampler=EpochSeededSampler(dataset, cfg.seed), num_workers=cfg.data.num_workers)
    cfg.model.vocab = tokenizer.vocab_size  # the saved config.yaml rebuilds the network (load_net)
    seed_run(cfg)
    module = RecordedLanguageModelModule(instantiate(cfg.model), optimizer=optimizer_factory(cfg),
                                         scheduler=scheduler_factory(cfg))
    store_path = Path(cfg.record.store_dir) if cfg.record.store_dir else out / "store"
    history = MetricHistory()
    trainer, store = train_recorded(cfg, module, out, store_path, language_model_batch_meta, loader,
                                    callbacks=[history], info={"experiment": "lstm_lm", "seed": cfg.seed})
    losses = [entry["loss"] for entry in history.train]
    report = {"command": command_line(), "config": OmegaConf.to_container(cfg, resolve=True),
              "setup": {"corpus": source.__class__.__name__, "embed": cfg.model.embed, "hidden": cfg.model.hidden,
                        "steps": trainer.global_step, "lr": cfg.optimizer.lr, "clip": cfg.trainer.gradient_clip_val,
                        "batch_size": cfg.data.batch_size, "seq_len": cfg.data.seq_len, "top": cfg.analysis.top},
              "vocab": tokenizer.vocab_size, "corpus_chars": len(text),
              "loss_first_last": [float(np.mean(losses[:10])), float(np.mean(losses[-10:]))],
              "slots": {short(n): store.num_slots(n) for n in store.layer_names}, "prompts": []}
    for prompt in cfg.analysis.prompts:
        report["prompts"].append(explain_prompt(module, store, text, tokenizer, prompt, cfg))
    if not cfg.record.keep_stores:
        shutil.rmtree(store_path)
    write_json(out / "results.json", report)
    (out / "report.md").write_text(to_markdown(report))
    return report


def short(name: str) -> str:
    """The network's own name of a recorded layer (``net.cell`` -> ``cell``)."""
    return name.removeprefix(NET_PREFIX)


def corpus_positions(store: DualStore, layer: str, seq_len: int) -> np.ndarray:
    """``(N,)`` corpus offset of the character each slot reads (recurrent cell: use = time step)."""
    meta = store.meta(layer)
    t = np.where(meta[:, USE] > 0, meta[:, USE], meta[:, POS])
    return meta[:, EXAMPLE] * seq_len + t


def explain_prompt(model: nn.Module, store: DualStore, text: str, tokenizer: CharTokenizer, prompt: str, cfg: DictConfig) -> dict:
    """Top training passages and position histogram for the prompt's last position, per layer and score."""
    tokens = tokenizer.encode(prompt)[None]                                         # (1, P)
    queries, logits = layer_inputs(model, tokens, store.layer_names)
    P = len(prompt)
    next_char = tokenizer.decode([int(logits[0, -1].argmax())])
    entry: dict = {"prompt": prompt, "predicted_next": next_char, "layers": {}}
    for name in store.layer_names:
        q = queries[name].reshape(P, -1)[-1:]                  # (1, d_key): one row per time step, either layer
        positions = corpus_positions(store, name, cfg.data.seq_len)
        bins = np.minimum(positions * cfg.analysis.position_bins // len(text), cfg.analysis.position_bins - 1)
        for score in ("contribution", "key"):
            ex = DualExplainer(store, name, score=score, device=cfg.analysis.device)
            e = ex.explain(q, k=10 * cfg.analysis.top)     # a passage drawn in several steps has several slots
            top: list[dict] = []
            for s, slot in zip(e.topk_scores[0].tolist(), e.topk_slots[0].tolist()):
                p = int(positions[slot])
                if any(t["corpus_pos"] == p for t in top):
                    next(t for t in top if t["corpus_pos"] == p)["slots"] += 1
                    continue
                if len(top) < cfg.analysis.top:
                    top.append({"score": s, "slot": slot, "slots": 1, "corpus_pos": p,
                                "passage": int(store.meta(name)[slot, EXAMPLE]),
                                "context": text[max(0, p - 40):p] + "[" + text[p:p + 1] + "]" + text[p + 1:p + 20]})
            hist = np.zeros(cfg.analysis.position_bins)
            for off, block in ex.stream(q):
                np.add.at(hist, bins[off:off + block.shape[1]], block[0].numpy())
            entry["layers"].setdefault(short(name), {})[score] = {
                "top": top, "position_share": (hist / max(hist.sum(), 1e-30)).tolist()}
    return entry


def to_markdown(report: dict) -> str:
    """The report: setup, then per prompt, layer and score the top passages and the decile shares."""
    cfg = report["setup"]
    lines = ["# LSTM LM dual-form report", "", f"Command: `{report['command']}`", "",
             f"Corpus: {cfg['corpus']} ({report['corpus_chars']} chars, vocab {report['vocab']}); "
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
