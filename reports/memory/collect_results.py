"""Copy the small artefacts of the runs in reproduce.sh into reports/memory/ and write summary.md/json.

    python reports/memory/collect_results.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

RUNS, DEST = Path("runs/memory"), Path("reports/memory")
COPY = {  # run dir -> files to keep
    "copy_ntm_s0": ["curve.png", "weightings.png", "weightings_len40.png", "weightings_len80.png"],
    "copy_lstm_s0": ["curve.png"],
    "copy_lstm_s1": [],
    "copy_lstm_s2": [],
    "copy_dnc_s0": ["curve.png", "weightings.png"],
    "recall_dnc_s0": ["curve.png", "weightings.png"],
    "recall_lstm_s0": ["curve.png"],
    "ut_reverse": ["curve.png", "results.md"],
    "ram_mnist": ["glimpses.png", "curve.png"],
    "jacobian": ["sequential_jacobian.png", "sensitivity.png"],
}


def main() -> None:
    summary: dict = {}
    for run, files in COPY.items():
        src = RUNS / run
        if not src.exists():
            continue
        for f in files:
            if (src / f).exists():
                shutil.copy(src / f, DEST / f"{run}_{f}")
        if (src / "history.json").exists():
            h = json.loads((src / "history.json").read_text())
            summary[run] = {"parameters": h["parameters"], "steps": h["eval"][-1]["step"] if h["eval"] else 0,
                            "sequences": h["eval"][-1]["sequences"] if h["eval"] else 0,
                            "final_eval": h["eval"][-1] if h["eval"] else None,
                            "best_eval_wrong_bits": min((e["wrong_bits"] for e in h["eval"]), default=None),
                            "generalisation": h.get("generalisation"),
                            "train_seconds": h["train"][-1]["seconds"] if h["train"] else None}
        if (src / "results.json").exists():
            r = json.loads((src / "results.json").read_text())
            summary[run] = {k: v for k, v in r.items() if k not in ("runs", "curve")}
            if "curve" in r:
                summary[run]["curve"] = r["curve"]
        for kind in ("rnn", "classifier"):
            if (src / f"jacobian_{kind}.json").exists():
                summary.setdefault(run, {})[kind] = json.loads((src / f"jacobian_{kind}.json").read_text())
    (DEST / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1)[:4000])


if __name__ == "__main__":
    main()
