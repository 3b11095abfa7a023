"""Parameter counts of every registered full-size model, as a markdown table.

    python -m qimia.models.summary            # every model at its default (full) size
    python -m qimia.models.summary --matched  # also re-size the residual references to their QIMIA twins
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

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


def matched_table() -> str:
    """Residual references re-sized to their QIMIA twins' (trainable) parameter counts, default sizes."""
    lines = ["| reference | candidate | knob | reference params | candidate params | gap |", "|---|---|---|---:|---:|---:|"]
    for ref, cand in [("transformer_lm", "qimia_transformer_lm"), ("shared_transformer_lm", "shared_qimia_transformer_lm"),
                      ("resnet20", "qimia_resnet20"), ("unet_denoiser", "qimia_unet_denoiser"),
                      ("transfer_head", "qimia_transfer_head")]:
        pair = matched_pair(ref, cand)
        lines.append(f"| `{ref}` | `{cand}` | {pair.knob}={pair.value} | {pair.reference_params:,} | "
                     f"{pair.candidate_params:,} | {100 * pair.relative_gap:+.2f}% |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pattern", default=None, help="fnmatch pattern over model names, e.g. '*resnet*'")
    parser.add_argument("--matched", action="store_true", help="also print the parameter-matched pairs")
    args = parser.parse_args(argv)
    print(parameter_table(list_models(args.pattern)))
    if args.matched:
        print()
        print(matched_table())


if __name__ == "__main__":
    main()
