"""``reports/dual/multitask_seeds.py``: the multi-task / continual tables are mean ± std over seeds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "reports" / "dual" / "multitask_seeds.py"


def load_script():
    spec = importlib.util.spec_from_file_location("multitask_seeds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_seed(folder: Path, seed: int, after: list[float], masked: list[float], momentum: float = 0.0) -> None:
    shares = {f"test_task{t}": {"layer0": {f"share_task{t}": [0.6 + 0.1 * seed, 0.01]}} for t in (0, 1)}
    results = {"command": f"qimia dual continual seed={seed}",
               "setup": {"mode": "continual", "momentum": momentum, "seed": seed},
               "acc_after_task0": after, "acc_final": [40.0 + seed, 98.0], "acc_reconstructed_all_slots": [40.0 + seed, 98.0],
               "acc_masked_keep_task0": masked, "acc_masked_keep_task1": [9.0, 60.0],
               "attention_shares": {"contribution": shares}}
    (folder / f"seed{seed}").mkdir(parents=True)
    (folder / f"seed{seed}" / "results.json").write_text(json.dumps(results))


def test_table_is_mean_and_sample_std_over_seeds_with_the_masking_gap(tmp_path):
    mod = load_script()
    write_seed(tmp_path / "plain", 0, [94.0, 30.0], [94.0, 30.0])
    write_seed(tmp_path / "plain", 1, [96.0, 34.0], [96.0, 33.5])
    out = tmp_path / "seeds.md"
    assert mod.main([str(tmp_path / "plain"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| after task 0 (checkpoint) | 95.00 ± 1.41 / 32.00 ± 2.83 |" in text
    assert "| final | 40.50 ± 0.71 / 98.00 ± 0.00 |" in text
    assert "(test task 0 / task 1) | 0.650 ± 0.071 / 0.650 ± 0.071 |" in text
    assert "(points) | 0.50 |" in text  # seed 1's task 1: 33.5 masked vs 34.0 after task 0
    assert "- `qimia dual continual seed=1`" in text and "plain: seeds [0, 1]" in text


def test_a_folder_mixing_settings_or_without_seeds_is_refused(tmp_path):
    mod = load_script()
    write_seed(tmp_path / "mixed", 0, [94.0, 30.0], [94.0, 30.0])
    write_seed(tmp_path / "mixed", 1, [94.0, 30.0], [94.0, 30.0], momentum=0.9)
    with pytest.raises(SystemExit, match="different settings"):
        mod.main([str(tmp_path / "mixed")])
    with pytest.raises(SystemExit, match="no seed<N>/results.json"):
        mod.main([str(tmp_path / "empty")])
