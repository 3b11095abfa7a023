"""LSTM language models explained by their training text (the language-model analysis of Irie,
Csordás, Schmidhuber 2022, "The Dual Form of Neural Networks Revisited: Connecting Test Time
Predictions to Training Patterns via Spotlights of Attention", ICML 2022, whose Table 2 lists the
top training passages of test queries).

Two networks (config group ``model``): :class:`LinearLSTM`, a character model whose recurrent
layer is one ``nn.Linear`` on ``[h_{t-1}; x_t]`` called once per time step, and :class:`LSTMLM`,
``nn.Embedding`` -> ``nn.LSTM`` -> ``nn.Linear`` (recorded as the views ``lstm.ih_l<k>`` /
``lstm.hh_l<k>`` of :mod:`qimia.dual.recurrent`), at the word level with ``tokens=word``. The model
is trained by the one training engine with the :class:`~qimia.dual.lightning.DualRecorderCallback`
and scored on the corpus's validation and test splits (perplexity, bits per character, and the
bigram model's perplexity as a floor). For each prompt, and for ``analysis.test_queries`` windows
of the test split, the queries are the inputs the recorded layers see at the last position; the
report lists the top training passages (with their corpus positions) and the attention grouped
by position in the training corpus.

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
    from qimia.data.text import Tokenizer

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


class LSTMLM(nn.Module):
    """``nn.Embedding`` -> ``nn.LSTM`` (``layers``, batch-first) -> ``nn.Linear``; ``(B, T)`` tokens -> ``(B, T, V)``."""

    def __init__(self, vocab: int, embed: int = 128, hidden: int = 256, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(self.embed(tokens))[0])                          # (B, T, H) -> (B, T, V)


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
    """Train with recording, score the held-out splits, then explain each prompt and test query;
    writes ``results.json`` and ``report.md``."""
    from qimia.data.base import EpochSeededSampler
    from qimia.data.text import TokenWindows, make_tokenizer
    from qimia.experiment.evidence import ngram_bpc
    from qimia.training.callbacks import MetricHistory
    from qimia.training.dual import RecordedLanguageModelModule, language_model_batch_meta
    from qimia.training.engine import optimizer_factory, scheduler_factory, seed_run, test

    check_budget(cfg)
    check_not_resumed(cfg)
    source = instantiate(cfg.corpus)
    corpus = source.load()
    text = corpus.train[: cfg.data.max_chars]
    check_text(text, f"the corpus {cfg.corpus.get('path') or cfg.corpus._target_}", 4 * cfg.data.seq_len)
    tokenizer = make_tokenizer(cfg.data.tokens, text, cfg.data.vocab_size)
    unknown = sorted({u for p in cfg.analysis.prompts for u in tokenizer.unknown(p)})
    if unknown:
        raise ValueError(f"prompt {cfg.data.tokens}s {unknown} do not occur in the training corpus; change the prompts.")
    tokens = tokenizer.encode(text)
    held_out = {split: tokenizer.encode(getattr(corpus, split)) for split in ("val", "test")}
    dataset = WindowsWithIds(TokenWindows(tokens, cfg.data.seq_len))
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
    scores = {}
    for split, stream in held_out.items():
        windows = torch.utils.data.DataLoader(TokenWindows(stream, cfg.data.seq_len), batch_size=cfg.data.batch_size)
        module.chars_per_token = len(getattr(corpus, split)) / len(stream)  # each split's own, for its bpc
        metrics = test(trainer, module, dataloaders=windows)
        bigram_bits = ngram_bpc(tuple(tokens.tolist()), tuple(stream.tolist()))   # bits per token
        scores[split] = {"ppl": metrics["test/ppl"], "bpc": metrics["test/bpc"], "tokens": len(stream),
                         "chars": len(getattr(corpus, split)), "bigram_ppl": 2.0 ** bigram_bits}
    report = {"command": command_line(), "config": OmegaConf.to_container(cfg, resolve=True),
              "setup": {"corpus": source.__class__.__name__, "tokens": cfg.data.tokens,
                        "model": cfg.model._target_.rsplit(".", 1)[-1], "embed": cfg.model.embed,
                        "hidden": cfg.model.hidden, "layers": cfg.model.get("layers", 1), "steps": trainer.global_step,
                        "lr": cfg.optimizer.lr, "clip": cfg.trainer.gradient_clip_val, "batch_size": cfg.data.batch_size,
                        "seq_len": cfg.data.seq_len, "top": cfg.analysis.top},
              "vocab": tokenizer.vocab_size, "corpus_chars": len(text), "corpus_tokens": len(tokens),
              "loss_first_last": [float(np.mean(losses[:10])), float(np.mean(losses[-10:]))], "held_out": scores,
              "slots": {short(n): store.num_slots(n) for n in store.layer_names}, "prompts": []}
    prompts = [("prompt", tokenizer.encode(p)) for p in cfg.analysis.prompts]
    prompts += [("test query", q) for q in held_out_queries(held_out["test"], cfg.analysis.test_queries,
                                                          cfg.analysis.query_len, cfg.seed)]
    for kind, ids in prompts:
        report["prompts"].append(explain_prompt(module, store, tokens, tokenizer, ids, kind, cfg))
    if not cfg.record.keep_stores:
        shutil.rmtree(store_path)
    write_json(out / "results.json", report)
    (out / "report.md").write_text(to_markdown(report))
    return report


def held_out_queries(stream: torch.Tensor, count: int, length: int, seed: int) -> list[torch.Tensor]:
    """``count`` windows of ``length`` tokens at seeded random offsets of a held-out stream."""
    if count <= 0:
        return []
    if len(stream) < length:
        raise ValueError(f"the test split has {len(stream)} tokens, fewer than analysis.query_len={length}.")
    starts = torch.randperm(len(stream) - length + 1, generator=torch.Generator().manual_seed(seed))[:count]
    return [stream[int(i):int(i) + length] for i in starts.sort().values]


def short(name: str) -> str:
    """The network's own name of a recorded layer (``net.cell`` -> ``cell``)."""
    return name.removeprefix(NET_PREFIX)


def corpus_positions(store: DualStore, layer: str, seq_len: int) -> np.ndarray:
    """``(N,)`` corpus offset of the character each slot reads (recurrent cell: use = time step)."""
    meta = store.meta(layer)
    t = np.where(meta[:, USE] > 0, meta[:, USE], meta[:, POS])
    return meta[:, EXAMPLE] * seq_len + t


def explain_prompt(model: nn.Module, store: DualStore, tokens: torch.Tensor, tokenizer: Tokenizer,
                   prompt: torch.Tensor, kind: str, cfg: DictConfig) -> dict:
    """Top training passages and position histogram for the last position of ``prompt`` ``(P,)``
    token ids, per layer and score; ``tokens`` is the training stream the slots' positions index."""
    queries, logits = layer_inputs(model, prompt[None], store.layer_names)         # prompt (1, P)
    P = len(prompt)
    before, after = cfg.analysis.context
    entry: dict = {"kind": kind, "prompt": tokenizer.decode(prompt.tolist()),
                   "predicted_next": tokenizer.decode([int(logits[0, -1].argmax())]), "layers": {}}
    for name in store.layer_names:
        q = queries[name].reshape(P, -1)[-1:]                  # (1, d_key): one row per time step, any layer
        positions = corpus_positions(store, name, cfg.data.seq_len)
        bins = np.minimum(positions * cfg.analysis.position_bins // len(tokens), cfg.analysis.position_bins - 1)
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
                    context = [tokenizer.decode(tokens[a:b].tolist())
                               for a, b in ((max(0, p - before), p), (p, p + 1), (p + 1, p + 1 + after))]
                    top.append({"score": s, "slot": slot, "slots": 1, "corpus_pos": p,
                                "passage": int(store.meta(name)[slot, EXAMPLE]),
                                "context": f"{context[0]} [{context[1]}] {context[2]}" if cfg.data.tokens == "word"
                                else f"{context[0]}[{context[1]}]{context[2]}"})
            hist = np.zeros(cfg.analysis.position_bins)
            for off, block in ex.stream(q):
                np.add.at(hist, bins[off:off + block.shape[1]], block[0].numpy())
            entry["layers"].setdefault(short(name), {})[score] = {
                "top": top, "position_share": (hist / max(hist.sum(), 1e-30)).tolist()}
    return entry


def to_markdown(report: dict) -> str:
    """The report: setup and held-out scores, then per prompt or test query, layer and score the top
    passages (the paper's Table 2) and the decile shares."""
    cfg = report["setup"]
    unit = "chars" if cfg["tokens"] == "char" else "tokens"
    lines = ["# LSTM LM dual-form report", "", f"Command: `{report['command']}`", "",
             f"Corpus: {cfg['corpus']} ({report['corpus_chars']} chars, {report['corpus_tokens']} {cfg['tokens']} "
             f"tokens, vocab {report['vocab']}); {cfg['model']} E={cfg['embed']} H={cfg['hidden']} layers "
             f"{cfg['layers']}, {cfg['steps']} SGD steps (lr {cfg['lr']}, clip {cfg['clip']}), batch "
             f"{cfg['batch_size']} x {cfg['seq_len']} {unit}; training loss {report['loss_first_last'][0]:.3f} -> "
             f"{report['loss_first_last'][1]:.3f}. Slots: {report['slots']}.", "",
             "| split | tokens | perplexity | bits per character | bigram model's perplexity |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {split} | {r['tokens']} | {r['ppl']:.2f} | {r['bpc']:.3f} | {r['bigram_ppl']:.2f} |"
              for split, r in report["held_out"].items()]
    lines += ["", "Scores: `contribution` = exact norm of the slot's contribution to the layer output; "
              "`key` = |x_t . x| (APPROXIMATE, ignores values and coefficients). The bracketed token of a passage "
              "is the one the slot's layer read at that step.", ""]
    for p in report["prompts"]:
        lines += [f"## {p.get('kind', 'prompt').capitalize()} {p['prompt']!r} (model's next token: "
                  f"{p['predicted_next']!r})", ""]
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
