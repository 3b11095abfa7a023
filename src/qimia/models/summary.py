"""Parameter counts of every registered full-size model, as markdown tables: ``qimia summary``.

    qimia summary                      # every model at its default (full) size
    qimia summary pattern='*resnet*'   # only the names an fnmatch pattern matches
    qimia summary matched=true         # also re-size the residual references to their QIMIA twins
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from omegaconf import DictConfig

from qimia.models.matching import matched_pair
from qimia.models.registry import create_model, list_models, model_defaults
from qimia.params import count_parameters

# name -> the residual reference it is compared with
REFERENCES = {
    "qimia_resnet20": "resnet20",
    "qimia_resnet50": "resnet50",
    "qimia_transformer_lm": "transformer_lm",
    "shared_qimia_transformer_lm": "shared_transformer_lm",
    "qimia_unet_denoiser": "unet_denoiser",
    "qimia_transfer_head": "transfer_head",
}


def parameter_table(names: Sequence[str] | None = None) -> str:
    """Markdown table: model, task, mixer, trainable and total parameters, gap to its reference."""
    names = list(names) if names is not None else list_models()
    counts, tasks, rows = {}, {}, []
    for name in names:
        model = create_model(name)
        counts[name] = (count_parameters(model, trainable_only=True), count_parameters(model))
        tasks[name] = model.task
    lines = ["| model | task | mixer | trainable params | total params | vs reference |", "|---|---|---|---:|---:|---|"]
    for name in names:
        trainable, total = counts[name]
        ref = REFERENCES.get(name)
        gap = ""
        if ref is not None:
            ref_count = counts[ref][0] if ref in counts else count_parameters(create_model(ref), trainable_only=True)
            gap = f"{100 * (trainable - ref_count) / ref_count:+.2f}% vs `{ref}`"
        mixer = model_defaults(name).get("mixer", "")
        rows.append(f"| `{name}` | {tasks[name]} | {mixer} | {trainable:,} | {total:,} | {gap} |")
    return "\n".join(lines + rows)


MATCHED = [("transformer_lm", "qimia_transformer_lm"), ("shared_transformer_lm", "shared_qimia_transformer_lm"),
           ("resnet20", "qimia_resnet20"), ("unet_denoiser", "qimia_unet_denoiser"),
           ("transfer_head", "qimia_transfer_head")]


def matched_table(pattern: str | None = None) -> str:
    """Residual references re-sized to their QIMIA twins' (trainable) parameter counts, default
    sizes; only the pairs whose candidate matches the fnmatch ``pattern``, if given."""
    lines = ["| reference | candidate | knob | reference params | candidate params | gap |", "|---|---|---|---:|---:|---:|"]
    for ref, cand in MATCHED:
        if pattern is not None and not fnmatch.fnmatchcase(cand, pattern):
            continue
        pair = matched_pair(ref, cand)
        lines.append(f"| `{ref}` | `{cand}` | {pair.knob}={pair.value} | {pair.reference_params:,} | "
                     f"{pair.candidate_params:,} | {100 * pair.relative_gap:+.2f}% |")
    return "\n".join(lines)


def main(cfg: DictConfig) -> None:
    """``qimia summary``: print the tables and write them to the job folder's ``summary.md``.

    Raises:
        ValueError: no registered model matches ``cfg.pattern``.
    """
    from qimia.app import output_dir

    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)  # the models' initialisation (parameter counts do not depend on it)
    names = list_models(cfg.pattern)
    if not names:
        raise ValueError(f"pattern={cfg.pattern!r} matches no model; the models are {list_models()}.")
    tables = [parameter_table(names)]
    if cfg.matched:
        tables.append(matched_table(cfg.pattern))
    text = "\n\n".join(tables) + "\n"
    print(text, end="")
    (output_dir() / "summary.md").write_text(text)
