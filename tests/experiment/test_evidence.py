"""``qimia evidence``: the verdict rule, the n-gram floor, and the README from finished runs."""

from __future__ import annotations

import json
import math
import random

import pytest
from omegaconf import OmegaConf

from qimia.experiment.evidence import build, ngram_bpc, verdict
from qimia.experiment.stats import Paired


def paired(low: float, high: float) -> Paired:
    return Paired(5, (low + high) / 2, low, high, 0)


@pytest.mark.parametrize(("vs_residual", "vs_denseformer", "mode", "expected"), [
    ((0.1, 0.3), (0.05, 0.2), "max", "helps"),
    ((-0.3, -0.1), (-0.2, -0.05), "min", "helps"),                    # lower is better: negative differences
    ((0.1, 0.3), (-0.05, 0.2), "max", "no difference (better than residual only)"),
    ((-0.1, 0.3), (-0.3, -0.1), "max", "no difference (worse than DenseFormer only)"),
    ((-0.3, -0.1), (-0.1, 0.1), "max", "hurts"),
    ((0.1, 0.3), (0.1, 0.3), "min", "hurts (also vs DenseFormer)"),
    ((-0.1, 0.1), (-0.1, 0.1), "max", "no difference"),
])
def test_verdict_needs_both_intervals_to_exclude_zero(vs_residual, vs_denseformer, mode, expected):
    assert verdict(paired(*vs_residual), paired(*vs_denseformer), mode) == expected


def test_ngram_floor_is_the_bigram_models_bits_per_character():
    periodic = "ab" * 500
    assert ngram_bpc(periodic, periodic) < 0.01  # every next character is certain given the last
    rng = random.Random(0)
    noise = "".join(rng.choice("abcd") for _ in range(20_000))
    assert ngram_bpc(noise, noise[:5000]) == pytest.approx(2.0, abs=0.02)  # uniform over 4 letters
    assert ngram_bpc(noise, noise[:5000], order=0) == pytest.approx(2.0, abs=0.02)


def _write_runs(folder, values, metric="acc", mode="max", extra=None, sweep=None):
    """Finished-run records of ``{arm: [metric per seed]}`` like ``qimia compare`` writes them."""
    point = "".join(f",{k}={v}" for k, v in (sweep or {}).items())
    for arm, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            run = folder / f"{arm}{point}_seed{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(OmegaConf.to_yaml({"data": {"modulus": 10}}))
            (run / "result.json").write_text(json.dumps({
                "arm": arm, "seed": seed, "sweep": sweep or {}, "test": {f"test/{metric}": value, **(extra or {})},
                "monitor": metric, "monitor_mode": mode, "unit": "samples", "params": 1000, "throughput": 1.0,
                "target_params": 1000, "knob": "width", "knob_value": 8, "arm_order": list(values),
                "started": 1000.0 + 60 * seed, "finished": 1060.0 + 60 * seed,
            }))


def test_the_readme_has_a_verdict_per_task_and_says_what_was_not_run(tmp_path):
    better = [0.90, 0.91, 0.92, 0.93, 0.94]
    _write_runs(tmp_path / "chunking", {"residual": [v - 0.10 for v in better], "qimia": better,
                                         "dwa": [v - 0.05 for v in better]}, sweep={"data.chains": 2})
    _write_runs(tmp_path / "denoising", {"residual": [30.0, 30.2, 29.9, 30.1, 30.0], "qimia": [30.1, 30.0, 30.0, 30.2, 29.9],
                                          "dwa": [30.0, 30.1, 30.0, 30.0, 30.1]}, metric="psnr", extra={"test/psnr_noisy": 30.05})
    tasks = OmegaConf.create({
        "chunking": {"experiment": "evidence/chunking", "dir": "chunking", "floor": "chance"},
        "denoising": {"experiment": "evidence/denoising", "dir": "denoising", "floor": "psnr_noisy"},
        "lm": {"experiment": "evidence/lm", "dir": "lm", "floor": "ngram"},
    })
    _write_runs(tmp_path / "lm", {"qimia": [3.0, 3.1]}, metric="bpc", mode="min")  # still running: no residual yet
    rows = build(tmp_path, tasks)
    # the command of evidence/chunking sweeps data.chains=2,8: the point without runs gets its own row
    assert [(r.task, r.point, r.verdict.split(":")[0]) for r in rows] == [
        ("chunking", "chains=2", "helps"), ("chunking", "chains=8", "not run"), ("denoising", "", "no difference"),
        ("lm", "", "incomplete")]
    assert "residual" in rows[3].verdict  # names the missing arm
    assert rows[0].vs_residual.mean == pytest.approx(0.10) and rows[0].vs_denseformer.mean == pytest.approx(0.05)
    assert rows[0].best_other == "dwa" and rows[0].vs_best.mean == pytest.approx(0.05)
    readme = (tmp_path / "README.md").read_text()
    assert "| chunking |" in readme and "**helps**" in readme and "chance 10.0%" in readme
    assert "+10.00 [" in readme  # accuracy differences in points
    # residual (30.04 dB) and QIMIA (30.04) do not clear the noisy input's 30.05 dB; DenseFormer (30.04) neither
    assert "noisy input 30.05 dB; not cleared by residual, qimia, dwa" in readme
    assert "| residual | 1,000 | 30.0400 ± 0.1140 | **no** | 5 |" in readme and "| qimia | 1,000 | 92.00 ± 1.58 | yes | 5 |" in readme
    assert "No finished comparison yet: `qimia compare experiment=evidence/lm" in readme
    assert rows[0].minutes == pytest.approx(5.0)  # the first start to the last end, over the 5 seeds
    assert math.isclose(float(next(line.split(",")[5] for line in (tmp_path / "summary.csv").read_text().splitlines()
                                   if line.startswith("chunking,chains=2,test/acc,qimia"))), 0.92)
